"""Auxiliary heads (model_args.aux_decoders / the task's aux_heads, with aux_loss weights), as TerraTorch has them."""

from __future__ import annotations

import pytest
import torch

from cli_configs import TINY_MODEL_ARGS, sen1floods11_config, write
from terramind_ft.cli import main
from terramind_ft.errors import ConfigError
from terramind_ft.models.factory import build_model
from terramind_ft.tasks import ClassificationTask, SemanticSegmentationTask

AUX = [{"name": "deep", "decoder": "FCNDecoder",
        "decoder_args": {"decoder_channels": 8, "decoder_num_convs": 2, "decoder_in_index": -1, "head_dropout": 0.0}}]
MODEL_ARGS = dict(TINY_MODEL_ARGS, head_dropout=0.0)


def _batch(size: int = 32) -> dict:
    return {"image": {"S2L1C": torch.randn(2, 13, size, size), "S1GRD": torch.randn(2, 2, size, size)},
            "mask": torch.randint(0, 2, (2, size, size))}


def test_aux_heads_run_in_training_only():
    model = build_model("segmentation", dict(MODEL_ARGS, aux_decoders=AUX))
    calls = []
    model.aux_heads["deep"].register_forward_hook(lambda *args: calls.append(1))
    x = _batch()["image"]
    out = model.train()(x)
    assert out.output.shape == out.auxiliary_heads["deep"].shape == (2, 2, 32, 32)
    with torch.no_grad():
        out = model.eval()(x)
    assert out.auxiliary_heads == {} and len(calls) == 1  # inference never runs the auxiliary head


def test_training_loss_adds_the_weighted_aux_loss():
    task = SemanticSegmentationTask(model_args=MODEL_ARGS, aux_heads=AUX, aux_loss={"deep": 0.4}, loss="ce")
    task.train()
    batch = _batch()
    logged = {}
    task.log = lambda name, value, **kwargs: logged.__setitem__(name, value)  # no trainer: catch what it logs
    torch.manual_seed(1)
    loss, _, _ = task._shared_step(batch, "train")
    torch.manual_seed(1)
    out = task.model(batch["image"])
    main_loss, _ = task.loss_fn(out.output, batch["mask"])
    aux_loss, _ = task.loss_fn(out.auxiliary_heads["deep"], batch["mask"])
    torch.testing.assert_close(loss, main_loss + 0.4 * aux_loss)
    torch.testing.assert_close(logged["train/loss_aux_deep"], aux_loss)
    loss.backward()
    assert all(p.grad is not None for p in task.model.aux_heads["deep"].parameters())
    # validation: the main head's loss alone
    task.eval()
    with torch.no_grad():
        val_loss, _, _ = task._shared_step(batch, "val")
        torch.testing.assert_close(val_loss, task.loss_fn(task.model(batch["image"]).output, batch["mask"])[0])


def test_classification_takes_aux_heads_too():
    args = dict(TINY_MODEL_ARGS, necks=[{"name": "SelectIndices", "indices": [11]}, {"name": "ReshapeTokensToImage"}],
                decoder="IdentityDecoder", num_classes=3)
    args.pop("decoder_channels")
    task = ClassificationTask(model_args=args, aux_heads=[{"name": "extra", "decoder": "IdentityDecoder"}],
                              aux_loss={"extra": 1.0})
    out = task.model.train()(_batch()["image"])
    assert out.output.shape == out.auxiliary_heads["extra"].shape == (2, 3)


@pytest.mark.parametrize(("kwargs", "key", "words"), [
    ({"aux_heads": AUX, "aux_loss": {"dep": 0.4}}, "aux_loss.dep", "Did you mean 'deep'"),
    ({"aux_heads": AUX}, "aux_loss", "has no weight in aux_loss"),
    ({"aux_loss": {"deep": 0.4}}, "aux_loss.deep", "no auxiliary heads"),
    ({"aux_heads": [{**AUX[0], "decoder_arg": {}}]}, "aux_decoders[0].decoder_arg", "Did you mean 'decoder_args'"),
    ({"aux_heads": [{**AUX[0], "decoder_args": {"decoder_channel": 8}}]},
     "aux_decoders[0].decoder_args.decoder_channel", "decoder_channels"),
    ({"aux_heads": [{"decoder": "FCNDecoder"}]}, "aux_decoders[0].name", "needs a name"),
])
def test_bad_aux_config_names_the_key(kwargs, key, words):
    with pytest.raises(ConfigError) as err:
        SemanticSegmentationTask(model_args=MODEL_ARGS, **kwargs)
    assert key in str(err.value) and words in str(err.value)


def test_aux_heads_given_twice_is_refused():
    with pytest.raises(ConfigError, match="given twice"):
        SemanticSegmentationTask(model_args=dict(MODEL_ARGS, aux_decoders=AUX), aux_heads=AUX,
                                 aux_loss={"deep": 1.0})


def test_aux_head_fit_logs_its_loss_and_predict_runs_without_it(tmp_path):
    """On the CLI with TerraTorch's spelling: class_path AuxiliaryHead entries under the task's aux_heads."""
    config = sen1floods11_config(tmp_path)
    config["model"]["init_args"]["aux_heads"] = [
        {"class_path": "terratorch.models.model.AuxiliaryHead", "init_args": AUX[0]}]
    config["model"]["init_args"]["aux_loss"] = {"deep": 0.4}
    cfg = write(config, tmp_path / "aux.yaml")
    assert main(["fit", "--config", cfg]) == 0
    run = tmp_path / "run"
    header = next(run.glob("lightning_logs/version_*/metrics.csv")).read_text().splitlines()[0].split(",")
    assert "train/loss_aux_deep_step" in header and "val/loss_aux_deep" not in header
    out = tmp_path / "pred"
    assert main(["predict", "--config", cfg, "--ckpt_path", "best", "--predict_output_dir", str(out)]) == 0
    assert len(list(out.glob("*_pred.tif"))) == 8
