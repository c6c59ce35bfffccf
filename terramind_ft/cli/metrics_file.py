"""``metrics.json`` after ``test``: every ``test/*`` metric (per class too), next to the tested checkpoint.

With several test loaders (``test_sets`` / ``test_dataloaders_names``), ``metrics`` holds every
``test/<loader>/<metric>`` and ``loaders`` one section per loader: ``{name: {metrics, per_class}}``."""

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
        class_names = list(getattr(pl_module, "class_names", []))
        loaders = getattr(pl_module, "test_loader_names", None) or []
        ckpt = trainer.ckpt_path
        folder = Path(ckpt).parent if ckpt else Path(trainer.default_root_dir)
        config = Path(trainer.default_root_dir) / "config.yaml"
        doc = {
            "checkpoint": str(ckpt) if ckpt else None,
            "metric_names_version": METRIC_NAMES_VERSION,
            "config_sha256": hashlib.sha256(config.read_bytes()).hexdigest() if config.exists() else None,
            "metrics": clean,
        }
        if loaders:
            doc["loaders"] = {}
            for loader in loaders:
                own = {k.removeprefix(f"test/{loader}/"): v for k, v in clean.items()
                       if k.startswith(f"test/{loader}/")}
                doc["loaders"][loader] = {"metrics": own, "per_class": _per_class(own, class_names)}
        else:
            doc["per_class"] = _per_class({k.removeprefix("test/"): v for k, v in clean.items()}, class_names)
        path = folder / METRICS_FILE
        atomic_write_json(path, doc, indent=1)
        log.info("wrote %s", path)


def _per_class(metrics: dict[str, float | None], class_names: list[str]) -> dict[str, dict[str, float | None]]:
    """{class: {metric: value}} from names like ``IoU_<class>``."""
    per_class: dict[str, dict[str, float | None]] = {}
    for name in class_names:
        for metric, value in metrics.items():
            if metric.endswith(f"_{name}"):
                per_class.setdefault(name, {})[metric[: -len(name) - 1]] = value
    return per_class
