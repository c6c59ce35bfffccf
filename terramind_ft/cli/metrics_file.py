"""``metrics.json`` after ``test``: every ``test/*`` metric (per class too), next to the tested checkpoint."""

from __future__ import annotations

import hashlib
import logging
import math
from pathlib import Path

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import Callback

from terramind_ft.io import atomic_write_json
from terramind_ft.tasks.metrics import METRIC_NAMES_VERSION

log = logging.getLogger("terramind_ft.cli")

METRICS_FILE = "metrics.json"


class TestMetricsWriter(Callback):
    """After ``test``: every ``test/*`` metric (per class too) -> metrics.json next to the tested checkpoint
    (or in the run folder when no checkpoint was given)."""

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")}
        clean = {k: (None if math.isnan(v) else v) for k, v in sorted(metrics.items())}
        per_class: dict[str, dict[str, float | None]] = {}
        for name in getattr(pl_module, "class_names", []):
            for k, v in clean.items():
                metric = k.removeprefix("test/")
                if metric.endswith(f"_{name}"):
                    per_class.setdefault(name, {})[metric[: -len(name) - 1]] = v
        ckpt = trainer.ckpt_path
        folder = Path(ckpt).parent if ckpt else Path(trainer.default_root_dir)
        config = Path(trainer.default_root_dir) / "config.yaml"
        doc = {
            "checkpoint": str(ckpt) if ckpt else None,
            "metric_names_version": METRIC_NAMES_VERSION,
            "config_sha256": hashlib.sha256(config.read_bytes()).hexdigest() if config.exists() else None,
            "metrics": clean,
            "per_class": per_class,
        }
        path = folder / METRICS_FILE
        atomic_write_json(path, doc, indent=1)
        log.info("wrote %s", path)
