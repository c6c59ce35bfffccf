"""``--ckpt_path`` on the user's path: fit, then test/predict with new settings on the command line.

The checkpoint gives the model's structure; the settings the user types (tiling, outputs, previews) win; a
missing, truncated or ill-fitting checkpoint is refused before anything is written.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from cli_configs import sen1floods11_config, write
from terramind_ft.cli import main
from terramind_ft.data import dataset as dataset_module
from terramind_ft.data.synthetic import make_scene
from terramind_ft.inference.geotiff import WEIGHTS_TAG

SCENE = (320, 256)  # five by four 64 px chips: larger than any one training chip


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """fit without tiling (what most users do), and a larger two-modality scene to predict on."""
    tmp = tmp_path_factory.mktemp("ckpt_settings")
    cfg = write(sen1floods11_config(tmp), tmp / "s1f11.yaml")
    assert main(["fit", "--config", cfg]) == 0
    scene = make_scene(tmp / "scene", height=SCENE[0], width=SCENE[1], modalities=("S2L1C", "S1GRD"), label=False)
    roots = {}
    for modality, suffix in (("S2L1C", "_S2Hand.tif"), ("S1GRD", "_S1Hand.tif")):  # the config's greps
        path = Path(scene.paths[modality])
        path.rename(path.with_name(path.stem + suffix))
        roots[modality] = str(path.parent)
    return tmp, cfg, roots


def _predict_args(cfg, roots, out, *extra):
    return ["predict", "--config", cfg, "--ckpt_path", "best", "--predict_output_dir", str(out),
            "--data.init_args.predict_data_root", json.dumps(roots), *extra]


def test_tiling_given_only_on_the_command_line_streams_the_scene(fitted, monkeypatch, tmp_path):
    """Lightning's own ckpt_path handling lays the saved hyper-parameters (no tiling) over the command line: the
    scene would be read whole and run in one forward. Here the command line wins and the scene streams."""
    tmp, cfg, roots = fitted

    def whole_file_read(*args, **kwargs):
        raise AssertionError("predict read the whole scene through the dataset instead of streaming it")

    monkeypatch.setattr(dataset_module.MultiModalDataset, "__getitem__", whole_file_read)
    out = tmp_path / "preds"
    code = main(_predict_args(cfg, roots, out,
                              "--model.init_args.tiled_inference_parameters", "{crop: 64, stride: 48, batch_size: 4}",
                              "--model.init_args.output_on_inference", "[prediction, probabilities]"))
    assert code == 0
    pred = next(out.glob("*_pred.tif"))
    with rasterio.open(pred) as dst:
        assert dst.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"  # written by the streaming scene writer
        assert dst.shape == SCENE
        assert dst.tags()[WEIGHTS_TAG] == f"checkpoint {tmp / 'run' / 'checkpoints' / 'best.ckpt'}"
    with rasterio.open(next(out.glob("*_probabilities.tif"))) as prob:  # output_on_inference from the command line
        np.testing.assert_allclose(prob.read().sum(0), 1.0, atol=1e-5)


def test_structure_comes_from_the_checkpoint_with_a_notice(fitted, tmp_path, caplog):
    tmp, cfg, roots = fitted
    out = tmp_path / "preds"
    code = main(_predict_args(cfg, roots, out, "--model.init_args.model_args.num_classes", "3",
                              "--model.init_args.tiled_inference_parameters", "{crop: 64, stride: 64}"))
    assert code == 0
    notices = [r.getMessage() for r in caplog.records if "model_args.num_classes" in r.getMessage()]
    assert notices and "3" in notices[0] and "2" in notices[0] and "checkpoint" in notices[0]
    with rasterio.open(next(out.glob("*_pred.tif"))) as dst:
        assert set(np.unique(dst.read(1)).tolist()) <= {0, 1, 255}  # the checkpoint's two classes


def test_predict_without_a_checkpoint_warns_and_tags_the_outputs(fitted, tmp_path, caplog):
    tmp, cfg, roots = fitted
    out = tmp_path / "preds"
    args = [a for a in _predict_args(cfg, roots, out) if a not in ("--ckpt_path", "best")]
    assert main(args) == 0
    assert any("NOT meaningful" in r.getMessage() for r in caplog.records)
    for path in out.glob("*.tif"):
        with rasterio.open(path) as dst:
            assert dst.tags()[WEIGHTS_TAG] == "untrained", path


def test_a_missing_checkpoint_is_refused_before_anything_is_written(fitted, capsys):
    tmp, cfg, _ = fitted
    config_yaml = tmp / "run" / "config.yaml"
    before = config_yaml.stat().st_mtime_ns
    missing = tmp / "nope.ckpt"
    code = main(["fit", "--config", cfg, "--ckpt_path", str(missing)])
    err = capsys.readouterr().err
    assert code == 4
    assert err.startswith("terramind-ft: checkpoint error:") and str(missing) in err and "Traceback" not in err
    assert config_yaml.stat().st_mtime_ns == before


def test_resume_from_a_truncated_checkpoint_names_it_and_suggests_best(fitted, tmp_path, capsys):
    tmp, cfg, _ = fitted
    run = tmp_path / "cut"
    (run / "checkpoints").mkdir(parents=True)
    data = (tmp / "run" / "checkpoints" / "last.ckpt").read_bytes()
    (run / "checkpoints" / "last.ckpt").write_bytes(data[: len(data) // 2])  # what a kill during a copy leaves
    code = main(["fit", "--config", cfg, "--trainer.default_root_dir", str(run), "--ckpt_path", "last"])
    err = capsys.readouterr().err
    assert code == 4 and "truncated" in err and str(run / "checkpoints" / "last.ckpt") in err
    assert "--ckpt_path best" in err and "Traceback" not in err


def test_a_checkpoint_of_another_model_is_refused_before_training(fitted, tmp_path, capsys):
    tmp, cfg, _ = fitted
    other = tmp_path / "other.ckpt"
    ckpt = torch.load(tmp / "run" / "checkpoints" / "best.ckpt", weights_only=True)
    ckpt["state_dict"] = {k: v for k, v in ckpt["state_dict"].items() if "head" not in k}
    torch.save(ckpt, other)
    code = main(["test", "--config", cfg, "--ckpt_path", str(other)])
    err = capsys.readouterr().err
    assert code == 4 and "do not fit the model" in err and "missing" in err


def test_a_monitor_no_metric_produces_fails_before_training(fitted, tmp_path, capsys):
    tmp, cfg, _ = fitted
    run = tmp_path / "typo"
    code = main(["fit", "--config", cfg, "--trainer.default_root_dir", str(run),
                 "--trainer.callbacks+=EarlyStopping", "--trainer.callbacks.monitor=val/miou"])
    err = capsys.readouterr().err
    assert code == 2 and "val/miou" in err and "val/mIoU" in err  # did you mean
    assert not (run / "checkpoints").exists() and not (run / "config.yaml").exists()


def test_every_checkpoint_loads_with_weights_only(fitted):
    tmp, _, _ = fitted
    for path in (tmp / "run" / "checkpoints").glob("*.ckpt"):
        ckpt = torch.load(path, weights_only=True)
        assert ckpt["hyper_parameters"]["model_args"]["num_classes"] == 2
        assert all(isinstance(v, (str, dict)) for v in ckpt["datamodule_hyper_parameters"]["train_data_root"].values())
        assert os.path.getsize(path) > 0


def test_a_default_typed_out_on_resume_is_named_not_dropped(fitted, tmp_path, capsys):
    """``--model.init_args.loss ce`` is the task's default. The resumed run keeps the checkpoint's loss ("dice"), as
    it keeps its optimiser: that used to happen without a word, because a value equal to the default looked like a
    key the config had left alone. Lightning's "checkpoint directory is not empty" is not said on a resume."""
    import shutil

    tmp, cfg, _ = fitted
    run = tmp_path / "resumed"
    shutil.copytree(tmp / "run", run)
    code = main(["fit", "--config", cfg, "--trainer.default_root_dir", str(run), "--ckpt_path", "last",
                 "--trainer.max_epochs", "2", "--model.init_args.loss", "ce", "--model.init_args.lr", "0.5"])
    err = capsys.readouterr().err
    assert code == 0, err
    loss_notice = next(line for line in err.splitlines() if "model.init_args.loss" in line)
    assert "'ce'" in loss_notice and "'dice'" in loss_notice and "resumed run continues as it was saved" in loss_notice
    lr_notice = next(line for line in err.splitlines() if "model.init_args.lr" in line)
    assert "0.5" in lr_notice and "optimiser state" in lr_notice
    assert "exists and is not empty" not in err
    saved = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved["epoch"] == 1 and saved["hyper_parameters"]["loss"] == "dice"
    assert saved["optimizer_states"][0]["param_groups"][0]["lr"] == pytest.approx(1e-3)


def test_evaluation_names_the_training_setup_it_keeps_and_not_the_optimiser(fitted, capsys):
    """test: the loss decides test/loss, so a typed-out default that the checkpoint overrides is named; the
    learning rate does nothing in test, so a notice about it would be noise."""
    tmp, cfg, _ = fitted
    code = main(["test", "--config", cfg, "--ckpt_path", "best", "--model.init_args.loss", "ce",
                 "--model.init_args.lr", "0.5"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert any("model.init_args.loss" in line and "how the weights were trained" in line for line in err.splitlines())
    assert "model.init_args.lr" not in err


def _best_state(checkpoint: dict) -> dict:
    return next(v for k, v in checkpoint["callbacks"].items() if k.startswith("ModelCheckpoint"))


def test_a_moved_run_folder_resumes_with_its_best_score(fitted, tmp_path, capsys):
    """Copied off a scratch disk, the run folder resumes elsewhere. Lightning forgot the best score when the
    folder's path changed, so the first validation after the resume replaced best.ckpt whatever its score."""
    import shutil

    tmp, cfg, _ = fitted
    moved = tmp_path / "moved"
    shutil.copytree(tmp / "run", moved)
    last_path = moved / "checkpoints" / "last.ckpt"
    last = torch.load(last_path, weights_only=True)
    state = _best_state(last)
    unbeatable = torch.tensor(0.999)  # no two training steps reach it: best.ckpt must stay as it was
    state.update(best_model_score=unbeatable, current_score=unbeatable, kth_value=unbeatable,
                 best_k_models={k: unbeatable for k in state["best_k_models"]})
    torch.save(last, last_path)
    best_before = (moved / "checkpoints" / "best.ckpt").read_bytes()

    code = main(["fit", "--config", cfg, "--trainer.default_root_dir", str(moved), "--ckpt_path", "last",
                 "--trainer.max_epochs", "2"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert (moved / "checkpoints" / "best.ckpt").read_bytes() == best_before
    after = _best_state(torch.load(last_path, weights_only=True))
    assert float(after["best_model_score"]) == pytest.approx(0.999)
    assert after["best_model_path"] == str((moved / "checkpoints" / "best.ckpt").resolve())
    assert "run folder moved" in err and "dirpath has changed" not in err


def test_a_last_checkpoint_resumed_in_a_new_folder_starts_its_best_afresh(fitted, tmp_path, capsys):
    """Only last.ckpt came along: the new folder has no best file the old score could describe, so its first
    validation writes one."""
    tmp, cfg, _ = fitted
    fresh = tmp_path / "fresh"
    code = main(["fit", "--config", cfg, "--trainer.default_root_dir", str(fresh), "--ckpt_path",
                 str(tmp / "run" / "checkpoints" / "last.ckpt"), "--trainer.max_epochs", "2"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert (fresh / "checkpoints" / "best.ckpt").is_file()
    assert "starts with its first validation" in err


def test_load_from_checkpoint_in_python_never_fetches_the_pretrained_backbone(fitted, tmp_path, monkeypatch):
    """From Python, ``Task.load_from_checkpoint`` of a model fitted from ``backbone_pretrained: true`` used to
    fetch the pretrained backbone first (to overwrite it at once): offline it failed with a jsonargparse "Union
    subtypes" error, online it downloaded the weights again."""
    from terramind_ft import hub
    from terramind_ft.tasks import SemanticSegmentationTask

    tmp, _, _ = fitted
    ckpt = torch.load(tmp / "run" / "checkpoints" / "best.ckpt", weights_only=True)
    ckpt["hyper_parameters"]["model_args"]["backbone_pretrained"] = True  # as fitted from the hub's weights
    path = tmp_path / "from_pretrained.ckpt"
    torch.save(ckpt, path)

    def no_download(*args, **kwargs):
        raise AssertionError("load_from_checkpoint fetched backbone weights the checkpoint already holds")

    monkeypatch.setattr(hub, "download", no_download)
    task = SemanticSegmentationTask.load_from_checkpoint(path)
    state = task.state_dict()
    assert state.keys() == ckpt["state_dict"].keys()
    assert all(torch.equal(state[k], v) for k, v in ckpt["state_dict"].items())


def test_keys_given_as_a_whole_model_section_on_the_command_line_count_as_typed(tmp_path):
    """``--model '{...}'`` and ``--model file.yaml`` (jsonargparse's whole-section forms) name init arguments the
    user typed, as dotted overrides and config files do: a checkpoint that overrides them must be able to say so."""
    from terramind_ft.cli.keys import given_init_keys

    section = tmp_path / "model.yaml"
    section.write_text("class_path: SemanticSegmentationTask\ninit_args: {loss: ce, lr: 0.01}\n")
    assert given_init_keys(["fit", "--model", "{class_path: SemanticSegmentationTask, init_args: {loss: ce}}"]) \
        == {"loss"}
    assert given_init_keys(["fit", f"--model={section}", "--model.init_args.ignore_index=3"]) == {
        "loss", "lr", "ignore_index"}
    assert given_init_keys(["fit", "--data", "{init_args: {batch_size: 2}}"]) == set()


def test_out_dtype_on_the_command_line_reaches_streamed_and_untiled_predictions(fitted, tmp_path):
    """``--out_dtype int16`` (TerraTorch's predict option, and its default type): the class map is int16 with
    nodata -1, tiled (streamed) or not; probabilities stay float32."""
    tmp, cfg, roots = fitted
    for name, extra in (("streamed", ["--model.init_args.tiled_inference_parameters", "{crop: 64, stride: 48}"]),
                        ("whole", [])):
        out = tmp_path / name
        assert main(_predict_args(cfg, roots, out, "--out_dtype", "int16", *extra,
                                  "--model.init_args.output_on_inference", "[prediction, probabilities]")) == 0
        (pred,) = out.glob("*_pred.tif")
        (prob,) = out.glob("*_probabilities.tif")
        with rasterio.open(pred) as src, rasterio.open(prob) as p:
            assert (src.dtypes[0], src.nodata, p.dtypes[0]) == ("int16", -1, "float32"), name
            assert set(np.unique(src.read(1))) <= {-1, 0, 1}
