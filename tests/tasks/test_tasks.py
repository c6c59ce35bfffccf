"""Tasks: steps, optimiser groups and lr_overrides, freezing, NaN guard, label checks, previews."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch
from torch.utils.data import DataLoader

from fake_backbone import register
from terramind_ft.errors import ConfigError, DataError, TrainingError
from terramind_ft.tasks import ClassificationTask, PixelwiseRegressionTask, SemanticSegmentationTask

register()

MODEL_ARGS = {
    "backbone": "fake_vit", "backbone_modalities": ["S2L1C", "S1GRD"], "backbone_in_chans": {"S2L1C": 3, "S1GRD": 2},
    "necks": [{"name": "SelectIndices", "indices": [0, 1, 2, 3]}, {"name": "ReshapeTokensToImage"},
              {"name": "LearnedInterpolateToPyramidal"}],
    "decoder": "UNetDecoder", "decoder_channels": [16, 8, 8, 8], "num_classes": 2,
}


def seg_batch(b=2, size=32, label=True):
    batch = {"image": {"S2L1C": torch.randn(b, 3, size, size), "S1GRD": torch.randn(b, 2, size, size)},
             "filename": {"S2L1C": [f"s2_{i}.tif" for i in range(b)], "S1GRD": [f"s1_{i}.tif" for i in range(b)]},
             "nodata": torch.zeros(b, size, size, dtype=torch.bool)}
    if label:
        mask = (batch["image"]["S1GRD"][:, 0] > 0).long()
        mask[:, :4] = -1
        batch["mask"] = mask
    return batch


class ListLoader(DataLoader):
    def __init__(self, batches):
        super().__init__(batches, batch_size=None, collate_fn=lambda x: x)


def trainer(tmp_path, **kw):
    return pl.Trainer(default_root_dir=tmp_path, accelerator="cpu", logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, **kw)


def test_segmentation_fit_logs_contracted_names_and_writes_previews(tmp_path):
    task = SemanticSegmentationTask(model_args=MODEL_ARGS, loss={"ce": 1.0, "dice": 0.5}, ignore_index=-1,
                                    class_names=["Others", "Flood"], lr=1e-3, plot_on_val=2)
    t = trainer(tmp_path, max_epochs=2, num_sanity_val_steps=0)
    batches = [seg_batch() for _ in range(3)]
    t.fit(task, ListLoader(batches), ListLoader(batches[:1]))
    logged = set(t.callback_metrics)
    expected = set(task.metric_names("val")) | {"train/loss", "train/Pixel_Accuracy", "train/loss_ce",
                                                "train/loss_dice"}
    assert expected <= logged | {f"{n}_epoch" for n in logged}, expected - logged
    previews = sorted(p.name for p in (tmp_path / "previews").iterdir())
    assert previews == ["epoch000_0.png", "epoch000_1.png", "epoch001_0.png", "epoch001_1.png"]


def test_lr_overrides_groups_and_frozen_parameters_stay_unchanged():
    """Groups as TerraTorch's tasks build them (every parameter, overrides first), so the optimiser state of its
    checkpoints fits; frozen parameters get no gradient, so a step (with weight decay) leaves them as they were."""
    task = SemanticSegmentationTask(model_args=MODEL_ARGS, lr=1e-3, lr_overrides={"encoder": 1e-5},
                                    freeze_decoder=True)
    opt = task.configure_optimizers()
    lrs = {g["name"]: g["lr"] for g in opt.param_groups}
    assert lrs == {"lr_override:encoder": 1e-5, "default": 1e-3}
    assert [p for g in opt.param_groups for p in g["params"]] == (
        [p for n, p in task.named_parameters() if "encoder" in n] +
        [p for n, p in task.named_parameters() if "encoder" not in n])
    frozen = {n: p.detach().clone() for n, p in task.model.decoder.named_parameters()}
    task.train()
    out = task.model(seg_batch()["image"]).output
    out.square().mean().backward()
    opt.step()
    assert all(torch.equal(p, frozen[n]) for n, p in task.model.decoder.named_parameters())
    assert opt.state and all(p.requires_grad for p in opt.state)  # no optimiser state for frozen parameters
    with pytest.raises(ConfigError, match=r"lr_overrides\.encodr.*matches no parameter"):
        SemanticSegmentationTask(model_args=MODEL_ARGS, lr_overrides={"encodr": 1e-5})


def test_task_scheduler_from_arguments():
    task = SemanticSegmentationTask(model_args=MODEL_ARGS, optimizer="SGD", optimizer_hparams={"momentum": 0.9},
                                    scheduler="ReduceLROnPlateau", scheduler_hparams={"patience": 2})
    cfg = task.configure_optimizers()
    assert isinstance(cfg["optimizer"], torch.optim.SGD) and cfg["optimizer"].defaults["momentum"] == 0.9
    assert cfg["lr_scheduler"]["monitor"] == "val/loss"
    with pytest.raises(ConfigError, match="Did you mean 'AdamW'"):
        SemanticSegmentationTask(model_args=MODEL_ARGS, optimizer="AdamWW").configure_optimizers()


def test_freeze_backbone():
    task = SemanticSegmentationTask(model_args=MODEL_ARGS, freeze_backbone=True)
    assert not any(p.requires_grad for p in task.model.encoder.parameters())
    assert all(p.requires_grad for p in task.model.head.parameters())


def test_nan_loss_stops_with_step_and_modality(tmp_path):
    task = SemanticSegmentationTask(model_args=MODEL_ARGS, ignore_index=-1)
    bad = seg_batch()
    bad["image"]["S1GRD"][0, 0, 0, 0] = float("nan")
    with pytest.raises(TrainingError, match=r"global step 0 .*modality S1GRD.*s1_0\.tif"):
        trainer(tmp_path, max_steps=1).fit(task, ListLoader([bad]))


def test_labels_out_of_range_name_the_fix():
    task = SemanticSegmentationTask(model_args=MODEL_ARGS, ignore_index=None)
    with pytest.raises(DataError, match="ignore_index"):
        task._shared_step(seg_batch(), "train")


def test_predict_outputs_and_other_tasks(tmp_path):
    task = SemanticSegmentationTask(model_args=MODEL_ARGS, output_on_inference=["prediction", "probabilities"])
    out = task.predict_step(seg_batch(size=40, label=False), 0)
    assert out["class_map"].dtype == torch.uint8 and out["class_map"].shape == (2, 40, 40)
    torch.testing.assert_close(out["probabilities"].sum(1), torch.ones(2, 40, 40))
    cls_args = {**MODEL_ARGS, "necks": [{"name": "AggregateTokens"}], "decoder": "IdentityDecoder", "num_classes": 3}
    cls_args.pop("decoder_channels")
    cls = ClassificationTask(model_args=cls_args)
    batch = {**seg_batch(label=False), "label": torch.tensor([0, 2])}
    loss, output, _ = cls._shared_step(batch, "val")
    assert output.shape == (2, 3) and cls.monitor == ("val/Accuracy", "max")
    reg_args = {k: v for k, v in MODEL_ARGS.items() if k != "num_classes"}
    reg = PixelwiseRegressionTask(model_args=reg_args)
    batch = {**seg_batch(label=False), "mask": torch.randn(2, 32, 32)}
    t = trainer(tmp_path, max_steps=1, limit_val_batches=1, num_sanity_val_steps=0)
    t.fit(reg, ListLoader([batch]), ListLoader([batch]))
    assert {"val/RMSE", "val/R2_Score", "train/RMSE_step"} <= set(t.callback_metrics)


def test_a_custom_loss_class_is_built_with_its_kwargs_and_used():
    cls_args = {**{k: v for k, v in MODEL_ARGS.items() if k != "decoder_channels"}, "decoder": "IdentityDecoder",
                "necks": [{"name": "AggregateTokens", "pooling": "mean"}], "num_classes": 3}
    task = ClassificationTask(model_args=cls_args, loss="custom_losses.ScaledCrossEntropy", custom_loss=True,
                              custom_loss_kwargs={"scale": 2.0})
    logits, target = torch.randn(4, 3), torch.tensor([0, 2, 1, 0])
    total, parts = task.loss_fn(logits, target)
    torch.testing.assert_close(total, 2 * torch.nn.functional.cross_entropy(logits, target))
    assert list(parts) == ["ScaledCrossEntropy"]


def test_a_custom_regression_loss_sees_only_valid_pixels():
    args = {k: v for k, v in MODEL_ARGS.items() if k != "num_classes"}
    task = PixelwiseRegressionTask(model_args=args, loss="custom_losses.RecordingL1", custom_loss=True, ignore_index=-1)
    target = torch.tensor([[1.0, float("nan")], [-1.0, 4.0]])
    from custom_losses import RecordingL1

    RecordingL1.seen.clear()
    task.loss_fn(torch.zeros(2, 2), target)
    assert RecordingL1.seen[0].tolist() == [1.0, 4.0]


@pytest.mark.parametrize(("kwargs", "key", "words"), [
    ({"loss": "no_such_module.Loss", "custom_loss": True}, "loss", "cannot import the custom loss"),
    ({"loss": "ce", "custom_loss": True}, "loss", "dotted path of a loss class"),
    ({"loss": "custom_losses.ScaledCrossEntropy", "custom_loss": True, "custom_loss_kwargs": {"scal": 2}},
     "custom_loss_kwargs", "unexpected keyword argument 'scal'"),
    ({"loss": "custom_losses.ScaledCrossEntropy", "custom_loss": True, "class_weights": [1.0, 2.0]},
     "class_weights", "give them in custom_loss_kwargs"),
    ({"loss": "ce", "custom_loss_kwargs": {"scale": 2}}, "custom_loss_kwargs", "without custom_loss: true"),
])
def test_custom_loss_mistakes_name_their_key(kwargs, key, words):
    with pytest.raises(ConfigError, match=words) as err:
        SemanticSegmentationTask(model_args=MODEL_ARGS, **kwargs)
    assert err.value.key == f"model.init_args.{key}"
