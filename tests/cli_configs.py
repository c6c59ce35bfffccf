"""Configs for the CLI tests: generated 64 px Sen1Floods11-like data and the tiny TerraMind (random weights)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from terramind_ft.data.synthetic import make_sen1floods11

FAST_TRAINER = {"accelerator": "cpu", "max_epochs": 1, "limit_train_batches": 2, "limit_val_batches": 1,
                "limit_test_batches": 1, "log_every_n_steps": 1, "enable_progress_bar": False,
                "enable_model_summary": False, "precision": "32-true"}

TINY_MODEL_ARGS = {
    "backbone": "terramind_v1_tiny", "backbone_pretrained": False, "backbone_modalities": ["S2L1C", "S1GRD"],
    "necks": [{"name": "SelectIndices", "indices": [2, 5, 8, 11]},
              {"name": "ReshapeTokensToImage", "remove_cls_token": False},
              {"name": "LearnedInterpolateToPyramidal"}],
    "decoder": "UNetDecoder", "decoder_channels": [32, 16, 16, 8], "head_dropout": 0.1, "num_classes": 2,
}


def sen1floods11_config(tmp_path: Path, **overrides: Any) -> dict[str, Any]:
    """Our own config (short class names) over generated data in ``tmp_path/data``."""
    ds = make_sen1floods11(tmp_path / "data", size=64, splits={"train": 4, "val": 2, "test": 2})
    return {
        "seed_everything": 0,
        "trainer": {**FAST_TRAINER, "default_root_dir": str(tmp_path / "run")},
        "data": {"class_path": "GenericMultiModalDataModule", "init_args": ds.datamodule_kwargs()},
        "model": {"class_path": "SemanticSegmentationTask", "init_args": {
            "model_args": dict(TINY_MODEL_ARGS), "loss": "dice", "ignore_index": -1,
            "class_names": ["Others", "Flood"], "lr": 1e-3, "plot_on_val": 1}},
        **overrides,
    }


def write(config: dict[str, Any], path: Path) -> str:
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return str(path)
