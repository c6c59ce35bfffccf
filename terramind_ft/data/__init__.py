"""Data: files -> raster reads -> standardisation -> joint transforms -> batches.

``GenericMultiModalDataModule`` (and the rest) are imported lazily, so that ``terramind_ft.data.synthetic`` or
``terramind_ft.data.raster`` can be used without importing Lightning.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "GenericMultiModalDataModule": "terramind_ft.data.datamodule",
    "CheckReport": "terramind_ft.data.datamodule",
    "TorchGeoDataModule": "terramind_ft.data.torchgeo_datamodule",
    "MultiModalDataset": "terramind_ft.data.dataset",
    "build_transform": "terramind_ft.data.transforms",
    "compute_statistics": "terramind_ft.data.statistics",
    "make_sen1floods11": "terramind_ft.data.synthetic",
    "make_classification": "terramind_ft.data.synthetic",
    "make_time_series": "terramind_ft.data.synthetic",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'terramind_ft.data' has no attribute {name!r}")
