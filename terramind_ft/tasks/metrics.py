"""THE metric-name contract and the metrics behind it (one home for metric names).

Every task logs ``<stage>/<name>`` with ``stage`` in ``train``, ``val``, ``test``. The names are stable
(versioned by :data:`METRIC_NAMES_VERSION`); ``terramind-ft check`` refuses a monitor key not in this list.

Segmentation (all from ONE confusion matrix accumulated over the whole epoch, ``ignore_index`` excluded):
    loss, mIoU (macro over classes present in target or prediction), mIoU_Micro, F1_Score (macro),
    Accuracy (macro = mean per-class recall), Pixel_Accuracy (micro), IoU_<class>, Class_Accuracy_<class>,
    Class_F1_<class>
Classification (one confusion matrix): loss, Accuracy (macro), Accuracy_Micro, F1_Score, Precision, Recall
    (macro), Class_Accuracy_<class>, Class_F1_<class>
Pixelwise regression (finite, non-ignored pixels): loss, MSE, RMSE, MAE, R2_Score
Training steps log only cheap per-batch values: loss (and loss_<name> for each term of a combined loss),
    plus Pixel_Accuracy (segmentation), Accuracy_Micro (classification), RMSE (regression).
``<class>`` is the class name from ``class_names`` (else the class index). A class absent from both target
and prediction has NaN per-class values (null in metrics.json) and is left out of macro means.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torchmetrics import Metric

METRIC_NAMES_VERSION = 1
STAGES = ("train", "val", "test")

SEGMENTATION_EPOCH = ("loss", "mIoU", "mIoU_Micro", "F1_Score", "Accuracy", "Pixel_Accuracy")
SEGMENTATION_PER_CLASS = ("IoU", "Class_Accuracy", "Class_F1")
CLASSIFICATION_EPOCH = ("loss", "Accuracy", "Accuracy_Micro", "F1_Score", "Precision", "Recall")
CLASSIFICATION_PER_CLASS = ("Class_Accuracy", "Class_F1")
REGRESSION_EPOCH = ("loss", "MSE", "RMSE", "MAE", "R2_Score")
TRAIN_STEP = {"segmentation": ("loss", "Pixel_Accuracy"), "classification": ("loss", "Accuracy_Micro"),
              "regression": ("loss", "RMSE")}
# What the default best checkpoint follows.
MONITOR = {"segmentation": ("val/mIoU", "max"), "classification": ("val/Accuracy", "max"),
           "regression": ("val/RMSE", "min")}


def metric_names(task: str, stage: str, class_names: Sequence[str] = (), loss_names: Sequence[str] = (),
                 extra: Sequence[str] = ()) -> list[str]:
    """Every key ``task`` logs at ``stage`` (e.g. ``val/mIoU``), in a stable order; ``extra``: optional epoch
    metrics switched on (Boundary_mIoU)."""
    if stage == "train":
        names = list(TRAIN_STEP[task])
    elif task == "segmentation":
        names = list(SEGMENTATION_EPOCH) + [f"{m}_{c}" for m in SEGMENTATION_PER_CLASS for c in class_names]
    elif task == "classification":
        names = list(CLASSIFICATION_EPOCH) + [f"{m}_{c}" for m in CLASSIFICATION_PER_CLASS for c in class_names]
    else:
        names = list(REGRESSION_EPOCH)
    if stage != "train":
        names += list(extra)
    if len(loss_names) > 1:
        names += [f"loss_{n}" for n in loss_names]
    return [f"{stage}/{n}" for n in names]


def _safe_div(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    return torch.where(den > 0, num / den.clamp_min(1e-12), torch.full_like(num, float("nan")))


def _nanmean(x: torch.Tensor) -> torch.Tensor:
    valid = ~torch.isnan(x)
    return x[valid].mean() if valid.any() else torch.zeros((), dtype=x.dtype, device=x.device)


def _nan_when_empty(values: dict[str, torch.Tensor], valid: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every metric NaN when no valid target was seen (a split whose labels are all ``ignore_index``): NaN is
    never chosen as best by a checkpoint, where a 0 mIoU or 0 error would be."""
    if float(valid) > 0:
        return {k: v.float() for k, v in values.items()}
    return {k: torch.full((), float("nan"), dtype=torch.float32, device=v.device) for k, v in values.items()}


class ConfusionMatrix(Metric):
    """A ``num_classes x num_classes`` confusion matrix (rows: target, columns: prediction), summed over
    batches and processes; targets equal to ``ignore_index`` are skipped."""

    full_state_update = False

    def __init__(self, num_classes: int, ignore_index: int | None = None, class_names: Sequence[str] | None = None):
        super().__init__()
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.class_names = [str(c) for c in (class_names or range(num_classes))]
        self.add_state("matrix", default=torch.zeros(num_classes, num_classes, dtype=torch.long),
                       dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        preds, target = preds.reshape(-1), target.reshape(-1)
        valid = (target >= 0) & (target < self.num_classes)
        if self.ignore_index is not None:
            valid &= target != self.ignore_index
        idx = target[valid] * self.num_classes + preds[valid].long()
        self.matrix += torch.bincount(idx, minlength=self.num_classes ** 2).reshape(self.num_classes, -1)

    def _per_class(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        m = self.matrix.double()
        tp = m.diag()
        return tp, m.sum(0) - tp, m.sum(1) - tp, m  # tp, fp, fn, matrix

    def _f1(self, tp: torch.Tensor, fp: torch.Tensor, fn: torch.Tensor) -> torch.Tensor:
        return _safe_div(2 * tp, 2 * tp + fp + fn)


BOUNDARY_DILATION_RATIO = 0.02  # Cheng et al.'s default: the band is 2 % of the image diagonal wide


def boundary_bands(masks: torch.Tensor, width: int) -> torch.Tensor:
    """The pixels of each mask ([..., H, W] bool) within ``width`` pixels of its contour (the image's edge counts
    as contour): the mask minus its erosion by a (2w+1)^2 square."""
    shape = masks.shape
    background = (~masks).reshape(-1, 1, *shape[-2:]).float()
    background = F.pad(background, (width,) * 4, value=1.0)  # outside the image is background
    near_background = F.max_pool2d(background, kernel_size=2 * width + 1, stride=1) > 0
    return masks & near_background.reshape(shape)


class SegmentationMetrics(ConfusionMatrix):
    """Confusion-matrix metrics; with ``boundary=True`` also ``Boundary_mIoU`` (Cheng et al., "Boundary IoU",
    CVPR 2021): the IoU of the bands along the predicted and the true class contours, per class, averaged over
    the classes present. It tells apart models whose mIoU is equal but whose edges are not; it costs a pooling pass
    per batch, so it is off by default."""

    def __init__(self, num_classes: int, ignore_index: int | None = None, class_names: Sequence[str] | None = None,
                 boundary: bool = False, dilation_ratio: float = BOUNDARY_DILATION_RATIO):
        super().__init__(num_classes, ignore_index, class_names)
        self.boundary = boundary
        self.dilation_ratio = dilation_ratio
        if boundary:
            for name in ("boundary_intersection", "boundary_union"):
                self.add_state(name, default=torch.zeros(num_classes, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        super().update(preds, target)
        if not self.boundary:
            return
        h, w = target.shape[-2:]
        width = max(1, round(self.dilation_ratio * math.hypot(h, w)))
        valid = (target >= 0) & (target < self.num_classes)
        if self.ignore_index is not None:
            valid &= target != self.ignore_index
        classes = torch.arange(self.num_classes, device=target.device).view(-1, 1, 1, 1)
        truth = boundary_bands(target.unsqueeze(0) == classes, width) & valid  # [C, B, H, W]
        predicted = boundary_bands(preds.unsqueeze(0) == classes, width) & valid
        self.boundary_intersection += (truth & predicted).sum(dim=(1, 2, 3))
        self.boundary_union += (truth | predicted).sum(dim=(1, 2, 3))

    def compute(self) -> dict[str, torch.Tensor]:
        tp, fp, fn, m = self._per_class()
        iou = _safe_div(tp, tp + fp + fn)
        recall = _safe_div(tp, tp + fn)
        f1 = self._f1(tp, fp, fn)
        out = {
            "mIoU": _nanmean(iou),
            "mIoU_Micro": _safe_div(tp.sum(), (tp + fp + fn).sum()).nan_to_num(0.0),
            "F1_Score": _nanmean(f1),
            "Accuracy": _nanmean(recall),
            "Pixel_Accuracy": _safe_div(tp.sum(), m.sum()).nan_to_num(0.0),
        }
        for i, name in enumerate(self.class_names):
            out[f"IoU_{name}"] = iou[i]
            out[f"Class_Accuracy_{name}"] = recall[i]
            out[f"Class_F1_{name}"] = f1[i]
        if self.boundary:
            out["Boundary_mIoU"] = _nanmean(_safe_div(self.boundary_intersection.double(),
                                                      self.boundary_union.double()))
        return _nan_when_empty(out, m.sum())


class ClassificationMetrics(ConfusionMatrix):
    def compute(self) -> dict[str, torch.Tensor]:
        tp, fp, fn, m = self._per_class()
        recall = _safe_div(tp, tp + fn)
        precision = _safe_div(tp, tp + fp)
        f1 = self._f1(tp, fp, fn)
        out = {
            "Accuracy": _nanmean(recall),
            "Accuracy_Micro": _safe_div(tp.sum(), m.sum()).nan_to_num(0.0),
            "F1_Score": _nanmean(f1),
            "Precision": _nanmean(precision),
            "Recall": _nanmean(recall),
        }
        for i, name in enumerate(self.class_names):
            out[f"Class_Accuracy_{name}"] = recall[i]
            out[f"Class_F1_{name}"] = f1[i]
        return _nan_when_empty(out, m.sum())


class RegressionMetrics(Metric):
    """MSE, RMSE, MAE and R2 over finite, non-ignored target pixels, from running sums."""

    full_state_update = False

    def __init__(self, ignore_index: float | None = None):
        super().__init__()
        self.ignore_index = ignore_index
        for name in ("n", "sum_sq_err", "sum_abs_err", "sum_t", "sum_t2"):
            self.add_state(name, default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        valid = torch.isfinite(target)
        if self.ignore_index is not None:
            valid &= target != self.ignore_index
        p, t = preds[valid].double(), target[valid].double()
        self.n += valid.sum()
        self.sum_sq_err += ((p - t) ** 2).sum()
        self.sum_abs_err += (p - t).abs().sum()
        self.sum_t += t.sum()
        self.sum_t2 += (t ** 2).sum()

    def compute(self) -> dict[str, torch.Tensor]:
        n = self.n.clamp_min(1)
        mse = self.sum_sq_err / n
        ss_tot = self.sum_t2 - self.sum_t ** 2 / n
        r2 = 1 - self.sum_sq_err / ss_tot if ss_tot > 0 else torch.tensor(float("nan"), dtype=torch.float64)
        out = {"MSE": mse, "RMSE": mse.sqrt(), "MAE": self.sum_abs_err / n, "R2_Score": r2}
        return _nan_when_empty(out, self.n)
