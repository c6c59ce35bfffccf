"""Validation previews go to the configured loggers too (TensorBoard images, MLflow artifacts), besides the PNGs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from cli_configs import sen1floods11_config, write
from terramind_ft.cli import main

sys.path.insert(0, str(Path(__file__).parent))  # preview_loggers, by class_path


def test_previews_reach_tensorboard_and_mlflow_style_loggers(tmp_path):
    config = sen1floods11_config(tmp_path)
    config["trainer"]["logger"] = [
        {"class_path": "preview_loggers.TensorBoardLike", "init_args": {"record": str(tmp_path / "tb.json")}},
        {"class_path": "preview_loggers.MlflowLike", "init_args": {"record": str(tmp_path / "mlflow.json")}},
    ]
    assert main(["fit", "--config", write(config, tmp_path / "loggers.yaml")]) == 0
    png = tmp_path / "run" / "previews" / "epoch000_0.png"
    assert png.is_file()
    tb = json.loads((tmp_path / "tb.json").read_text())
    assert tb == [{"api": "add_figure", "tag": "previews/sample_0", "step": 2, "axes": tb[0]["axes"], "close": False}]
    assert tb[0]["axes"] >= 3  # input, label, prediction
    mlflow = json.loads((tmp_path / "mlflow.json").read_text())
    assert mlflow == [{"api": "log_artifact", "run_id": "run-1", "file": str(png), "artifact_path": "previews"}]
