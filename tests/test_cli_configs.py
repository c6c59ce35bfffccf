"""Every shipped config in configs/ builds (random tiny weights, offline); the TiM one also runs a batch."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from cli_configs import sen1floods11_config, write
from terramind_ft.cli import main

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))
OFFLINE = "--model.init_args.model_args.backbone_pretrained=false"


@pytest.mark.parametrize("config", CONFIGS, ids=[c.stem for c in CONFIGS])
def test_shipped_config_builds(config, capsys):
    init = yaml.safe_load(config.read_text())["model"]["init_args"]
    if "model_args" not in init:  # EmbeddingTask: its backbone and arguments directly
        assert main(["check", "--config", str(config), "--skip-data"]) == 0, capsys.readouterr().out
        assert "[check] passed" in capsys.readouterr().out
        return
    backbone = init["model_args"]["backbone"]
    tiny = backbone.replace("_base", "_tiny").replace("_small", "_tiny").replace("_large", "_tiny")
    args = ["check", "--config", str(config), "--skip-data", OFFLINE, f"--model.init_args.model_args.backbone={tiny}"]
    assert main(args) == 0, capsys.readouterr().out
    assert "[check] passed" in capsys.readouterr().out


def test_tim_config_runs_a_training_and_validation_batch(tmp_path, capsys):
    config = sen1floods11_config(tmp_path)
    model_args = config["model"]["init_args"]["model_args"]
    model_args["backbone"] = "terramind_v1_tiny_tim"
    model_args["backbone_tim_modalities"] = ["LULC"]
    assert main(["check", "--config", write(config, tmp_path / "tim.yaml")]) == 0, capsys.readouterr().out
    out = capsys.readouterr().out
    assert "[train batch]" in out and "[val batch]" in out and "[check] passed" in out
