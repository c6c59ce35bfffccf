"""terramind-ft: fine-tune and run the TerraMind Earth-observation foundation model from YAML configs.

The names the IBM/terramind notebooks and the TerraTorch docs import are here too, so that their cells run with
only the import lines changed: ``BACKBONE_REGISTRY``, ``FULL_MODEL_REGISTRY``, ``tiled_inference`` (also as
``terramind_ft.tasks.tiled_inference.tiled_inference``, where TerraTorch keeps it), ``v1_pretraining_mean`` and
``v1_pretraining_std``. They are imported on first use, so that ``import terramind_ft`` stays light.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "BACKBONE_REGISTRY": "terramind_ft.registry",
    "FULL_MODEL_REGISTRY": "terramind_ft.registry",
    "tiled_inference": "terramind_ft.inference.tiling",
    "v1_pretraining_mean": "terramind_ft.modalities",
    "v1_pretraining_std": "terramind_ft.modalities",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module = importlib.import_module(_LAZY[name])
        if name.endswith("_REGISTRY"):
            import terramind_ft.models  # noqa: F401  (registers the models)
        return getattr(module, name)
    raise AttributeError(f"module 'terramind_ft' has no attribute {name!r}")
