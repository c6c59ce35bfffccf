"""The real CLI, in-process, end to end: fit -> test -> predict -> resume, and the run folder it leaves."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
import torch
import yaml

from cli_configs import sen1floods11_config, write
from terramind_ft.cli import main
from terramind_ft.cli.app import build_cli


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One fit shared by the tests of this file (the expensive part)."""
    tmp = tmp_path_factory.mktemp("cli")
    config = sen1floods11_config(tmp)
    config["optimizer"] = {"class_path": "torch.optim.AdamW", "init_args": {"lr": 1e-3}}
    config["lr_scheduler"] = {"class_path": "ReduceLROnPlateau", "init_args": {"monitor": "val/loss"}}
    config["model"]["init_args"]["lr_overrides"] = {"model.encoder": 1e-5}
    cfg = write(config, tmp / "s1f11.yaml")
    assert main(["fit", "--config", cfg]) == 0
    return tmp, cfg


def test_fit_leaves_the_documented_run_folder(trained):
    tmp, _ = trained
    run = tmp / "run"
    assert (run / "checkpoints" / "best.ckpt").is_file() and (run / "checkpoints" / "last.ckpt").is_file()
    assert sorted(p.name for p in (run / "previews").iterdir()) == ["epoch000_0.png"]
    resolved = yaml.safe_load((run / "config.yaml").read_text())
    assert resolved["model"]["class_path"] == "terramind_ft.tasks.SemanticSegmentationTask"
    deploy = yaml.safe_load((run / "config_deploy.yaml").read_text())
    assert "optimizer" not in deploy and "lr_scheduler" not in deploy and "ckpt_path" not in deploy
    assert deploy["model"]["init_args"]["model_args"]["backbone_pretrained"] is False
    ckpt = torch.load(run / "checkpoints" / "best.ckpt", weights_only=False, map_location="cpu")
    callbacks = {k: v for k, v in ckpt["callbacks"].items() if k.startswith("ModelCheckpoint")}
    assert any("'monitor': 'val/mIoU'" in k or v.get("monitor") == "val/mIoU" for k, v in callbacks.items())
    metrics_csv = next(run.glob("lightning_logs/version_*/metrics.csv")).read_text().splitlines()[0].split(",")
    for name in ("train/loss_step", "train/Pixel_Accuracy_step", "val/loss", "val/mIoU", "val/mIoU_Micro",
                 "val/F1_Score", "val/Accuracy", "val/Pixel_Accuracy", "val/IoU_Others", "val/IoU_Flood"):
        assert name in metrics_csv, name


def test_top_level_optimizer_honours_lr_overrides(trained):
    """TerraTorch silently drops lr_overrides when the config has a top-level optimizer: block; we do not."""
    tmp, cfg = trained
    cli = build_cli(["--config", cfg], run=False)
    opt = cli.model.configure_optimizers()
    opt = opt["optimizer"] if isinstance(opt, dict) else opt
    assert isinstance(opt, torch.optim.AdamW)
    assert sorted(g["lr"] for g in opt.param_groups) == [1e-5, 1e-3]


def test_test_best_writes_metrics_json_next_to_the_checkpoint(trained):
    tmp, cfg = trained
    assert main(["test", "--config", cfg, "--ckpt_path", "best"]) == 0
    doc = json.loads((tmp / "run" / "checkpoints" / "metrics.json").read_text())
    assert doc["checkpoint"].endswith("best.ckpt") and doc["metric_names_version"] == 1
    assert {"test/loss", "test/mIoU", "test/IoU_Flood", "test/Pixel_Accuracy"} <= set(doc["metrics"])
    assert set(doc["per_class"]) == {"Others", "Flood"} and "IoU" in doc["per_class"]["Flood"]


def test_predict_writes_georeferenced_class_maps(trained, caplog):
    tmp, _ = trained
    out = tmp / "preds"
    deploy = str(tmp / "run" / "config_deploy.yaml")
    assert main(["predict", "--config", deploy, "--ckpt_path", "best", "--predict_output_dir", str(out)]) == 0
    manifest = json.loads((out / "predictions.json").read_text())
    assert len(manifest) == 8  # every input of the predict folders
    for source, outputs in manifest.items():
        with rasterio.open(source) as src, rasterio.open(outputs[0]) as dst:
            assert dst.crs == src.crs and dst.transform == src.transform and dst.shape == src.shape
            assert dst.dtypes[0] == "uint8" and dst.nodata == 255
            assert dst.descriptions[0] == "class (0=Others, 1=Flood)" and dst.colormap(1)[1][:3] != (0, 0, 0)
            values = dst.read(1)
            assert set(np.unique(values)) <= {0, 1, 255}


def test_fit_resumes_from_last(trained):
    tmp, cfg = trained
    last = tmp / "run" / "checkpoints" / "last.ckpt"
    before = torch.load(last, weights_only=False, map_location="cpu")
    assert main(["fit", "--config", cfg, "--ckpt_path", "last", "--trainer.max_epochs", "2"]) == 0
    after = torch.load(last, weights_only=False, map_location="cpu")
    # continued where it stopped (one more epoch of 2 steps), not restarted from step 0
    assert after["epoch"] > before["epoch"] and after["global_step"] == before["global_step"] + 2
