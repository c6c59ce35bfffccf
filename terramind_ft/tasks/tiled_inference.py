"""``from terramind_ft.tasks.tiled_inference import tiled_inference``: where TerraTorch users import it from
(``terratorch.tasks.tiled_inference``). The implementation lives in :mod:`terramind_ft.inference.tiling`."""

from terramind_ft.inference.tiling import TilingParameters, tiled_inference

__all__ = ["TilingParameters", "tiled_inference"]
