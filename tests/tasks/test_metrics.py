"""Metrics from one confusion matrix agree with torchmetrics; names follow the documented contract."""

from __future__ import annotations

import math

import torch
from torchmetrics.classification import (MulticlassAccuracy, MulticlassF1Score, MulticlassJaccardIndex,
                                         MulticlassPrecision)
from torchmetrics.regression import MeanAbsoluteError, MeanSquaredError, R2Score

from terramind_ft.tasks import metrics as M


def seg_data(seed=0):
    g = torch.Generator().manual_seed(seed)
    target = torch.randint(0, 3, (4, 16, 16), generator=g)
    preds = torch.where(torch.rand(4, 16, 16, generator=g) < 0.7, target, torch.randint(0, 3, (4, 16, 16), generator=g))
    target[:, :2] = -1
    return preds, target


def test_segmentation_metrics_match_torchmetrics_and_accumulate_globally():
    preds, target = seg_data()
    m = M.SegmentationMetrics(3, ignore_index=-1, class_names=["a", "b", "c"])
    for i in range(4):  # batch by batch: one global confusion matrix, not a mean of batch means
        m.update(preds[i:i + 1], target[i:i + 1])
    out = m.compute()
    kw = {"num_classes": 3, "ignore_index": -1}
    torch.testing.assert_close(out["mIoU"], MulticlassJaccardIndex(**kw, average="macro")(preds, target))
    torch.testing.assert_close(out["mIoU_Micro"], MulticlassJaccardIndex(**kw, average="micro")(preds, target))
    torch.testing.assert_close(out["Accuracy"], MulticlassAccuracy(**kw, average="macro")(preds, target))
    torch.testing.assert_close(out["Pixel_Accuracy"], MulticlassAccuracy(**kw, average="micro")(preds, target))
    torch.testing.assert_close(out["F1_Score"], MulticlassF1Score(**kw, average="macro")(preds, target))
    per_class = MulticlassJaccardIndex(**kw, average="none")(preds, target)
    torch.testing.assert_close(torch.stack([out["IoU_a"], out["IoU_b"], out["IoU_c"]]), per_class)
    expected = set(M.metric_names("segmentation", "val", ["a", "b", "c"])) - {"val/loss"}
    assert sorted(f"val/{k}" for k in out) == sorted(expected)


def test_absent_class_is_nan_and_left_out_of_the_mean():
    m = M.SegmentationMetrics(3, ignore_index=None)
    m.update(torch.tensor([[0, 1, 1, 0]]), torch.tensor([[0, 1, 0, 0]]))
    out = m.compute()
    assert math.isnan(out["IoU_2"])
    torch.testing.assert_close(out["mIoU"], (out["IoU_0"] + out["IoU_1"]) / 2)


def test_classification_metrics():
    g = torch.Generator().manual_seed(1)
    target = torch.randint(0, 4, (64,), generator=g)
    preds = torch.where(torch.rand(64, generator=g) < 0.6, target, torch.randint(0, 4, (64,), generator=g))
    m = M.ClassificationMetrics(4)
    m.update(preds, target)
    out = m.compute()
    torch.testing.assert_close(out["Accuracy"], MulticlassAccuracy(4, average="macro")(preds, target))
    torch.testing.assert_close(out["Accuracy_Micro"], MulticlassAccuracy(4, average="micro")(preds, target))
    torch.testing.assert_close(out["Precision"], MulticlassPrecision(4, average="macro")(preds, target))
    assert set(f"test/{k}" for k in out) | {"test/loss"} == set(M.metric_names("classification", "test", list("0123")))


def test_regression_metrics_mask_nan_and_ignored():
    g = torch.Generator().manual_seed(2)
    target = torch.randn(2, 8, 8, generator=g)
    preds = target + 0.1 * torch.randn(2, 8, 8, generator=g)
    noisy = target.clone()
    noisy[0, 0] = float("nan")
    noisy[1, 0] = -9999
    m = M.RegressionMetrics(ignore_index=-9999)
    m.update(preds, noisy)
    out = m.compute()
    valid = torch.isfinite(noisy) & (noisy != -9999)
    p, t = preds[valid], target[valid]
    torch.testing.assert_close(out["MSE"], MeanSquaredError()(p, t))
    torch.testing.assert_close(out["MAE"], MeanAbsoluteError()(p, t))
    torch.testing.assert_close(out["R2_Score"], R2Score()(p, t), rtol=1e-4, atol=1e-5)


def test_metric_name_contract_is_stable():
    """Renaming any of these breaks users' monitors and sweeps (TerraTorch #359): bump METRIC_NAMES_VERSION."""
    assert M.METRIC_NAMES_VERSION == 1
    assert M.metric_names("segmentation", "val", ["Others", "Flood"]) == [
        "val/loss", "val/mIoU", "val/mIoU_Micro", "val/F1_Score", "val/Accuracy", "val/Pixel_Accuracy",
        "val/IoU_Others", "val/IoU_Flood", "val/Class_Accuracy_Others", "val/Class_Accuracy_Flood",
        "val/Class_F1_Others", "val/Class_F1_Flood"]
    assert M.metric_names("segmentation", "train", ["a"], ["ce", "dice"]) == [
        "train/loss", "train/Pixel_Accuracy", "train/loss_ce", "train/loss_dice"]
    assert M.metric_names("regression", "test") == ["test/loss", "test/MSE", "test/RMSE", "test/MAE", "test/R2_Score"]
    assert M.MONITOR == {"segmentation": ("val/mIoU", "max"), "classification": ("val/Accuracy", "max"),
                         "regression": ("val/RMSE", "min")}
