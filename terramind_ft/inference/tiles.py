"""A large scene as a stream of standardised tiles, for work that wants one result per tile (embeddings).

:class:`SceneTiles` walks a scene in strips of ``tile`` rows: per strip it reads one window of every modality
raster (full width; modalities on another grid are warped onto the reference grid, as in
:func:`~terramind_ft.inference.scene.predict_scene`, whose readers it shares), cuts it into ``tile`` x ``tile``
tiles, standardises each with the modality's mean/std and puts ``nodata_fill`` where an input is invalid (the
data module's ``no_data_replace``). Peak memory is one strip per modality: it grows with the scene width and
``tile``, never with its height (:attr:`SceneTiles.peak_strip_bytes` says how much it was).

Tiles start every ``tile`` pixels; the last row and column of tiles are aligned to the scene's edge (so they
overlap their neighbour rather than run over the edge), and a scene smaller than ``tile`` is one tile of its own
size (:func:`tile_windows`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch


def scene_sources(specs: Mapping[str, Any], record: Any, nodata_fill: float | None) -> dict[str, Any]:
    """A data module's record as SceneTiles / predict_scene arguments: ``sources``, ``means``, ``stds``,
    ``band_indexes`` (1-based, None when every band is read) and ``nodata_fill``, so that its files are
    standardised as the data module does (``specs``: the data module's per-modality specs)."""
    files = {m: str(p) for m, p in record.files.items()}
    band_indexes = {m: [i + 1 for i in specs[m].band_indices] for m in files if specs[m].band_indices is not None}
    linear_to_db = [m for m in files if getattr(specs[m], "linear_to_db", False)]
    return {"sources": files, "means": {m: list(specs[m].mean) for m in files},
            "stds": {m: list(specs[m].std) for m in files}, "band_indexes": band_indexes or None,
            "nodata_fill": nodata_fill, "linear_to_db": linear_to_db or None}


def tile_windows(height: int, width: int, tile: int) -> list[tuple[int, int, int, int]]:
    """``(row, col, height, width)`` of the tiles covering a ``height`` x ``width`` scene (module docstring)."""

    def starts(size: int) -> list[int]:
        if size <= tile:
            return [0]
        return sorted({*range(0, size - tile + 1, tile), size - tile})

    return [(r, c, min(tile, height), min(tile, width)) for r in starts(height) for c in starts(width)]


@dataclass
class SceneTile:
    """One tile: its window on the reference grid, standardised inputs ``{modality: float32 [C, h, w]}``, the
    share of its pixels where an input is invalid, its bounds (left, bottom, right, top) and CRS."""

    row: int
    col: int
    height: int
    width: int
    inputs: dict[str, torch.Tensor]
    invalid_share: float
    bounds: tuple[float, float, float, float]
    crs: Any

    @property
    def tile_id(self) -> str:
        return f"r{self.row}_c{self.col}"


class SceneTiles:
    """Iterate over the tiles of a scene (see the module docstring).

    ``sources``, ``means``, ``stds``, ``band_indexes`` (1-based), ``linear_to_db`` and ``reference_modality`` as for
    :func:`~terramind_ft.inference.scene.predict_scene`. ``require_georeference=False`` accepts a reference
    raster without CRS (its modalities must then share its pixel grid; bounds are in pixel units).
    """

    def __init__(self, sources: Mapping[str, str | Path], tile: int, *,
                 means: Mapping[str, Sequence[float]] | None = None,
                 stds: Mapping[str, Sequence[float]] | None = None,
                 band_indexes: Mapping[str, Sequence[int]] | None = None, nodata_fill: float | None = 0.0,
                 reference_modality: str | None = None, require_georeference: bool = True,
                 linear_to_db: Sequence[str] | None = None):
        self.sources = {m: str(p) for m, p in sources.items()}
        self.tile = int(tile)
        self.means, self.stds, self.band_indexes = means, stds, band_indexes
        self.nodata_fill = float("nan") if nodata_fill is None else float(nodata_fill)  # None keeps NaN
        self.reference = reference_modality or next(iter(self.sources))
        self.require_georeference = require_georeference  # False: plain pixel grids (bounds in pixel units)
        self.linear_to_db = list(linear_to_db or ())
        self.peak_strip_bytes = 0
        import rasterio

        with rasterio.open(self.sources[self.reference]) as ref:
            self.height, self.width, self.crs, self.transform = ref.height, ref.width, ref.crs, ref.transform
        self.windows = tile_windows(self.height, self.width, self.tile)

    def __len__(self) -> int:
        return len(self.windows)

    def __iter__(self) -> Iterator[SceneTile]:
        import rasterio

        from terramind_ft.inference.scene import _open_sources

        by_row: dict[int, list[tuple[int, int, int, int]]] = {}
        for window in self.windows:
            by_row.setdefault(window[0], []).append(window)
        with ExitStack() as stack:
            stack.enter_context(rasterio.Env())
            opened, _ = _open_sources(self.sources, self.reference, stack, self.means, self.stds,
                                      self.band_indexes, None, None, True, self.require_georeference,
                                      linear_to_db=self.linear_to_db)
            for row, windows in by_row.items():
                rows = np.arange(row, row + windows[0][2])
                strips = [(src, *src.read_rows(rows)) for src in opened]
                self.peak_strip_bytes = max(self.peak_strip_bytes,
                                            sum(raw.nbytes + masked.nbytes for _, raw, masked in strips))
                for r, c, h, w in windows:
                    inputs, invalid = {}, np.zeros((h, w), bool)
                    for src, raw, masked in strips:
                        values = src.standardise(raw[:, :, c:c + w], masked[:, c:c + w], self.nodata_fill,
                                                 invalid=invalid)
                        inputs[src.modality] = torch.from_numpy(values)
                    yield SceneTile(row=r, col=c, height=h, width=w, inputs=inputs, invalid_share=float(invalid.mean()),
                                    bounds=self._bounds(r, c, h, w), crs=self.crs)

    def _bounds(self, row: int, col: int, height: int, width: int) -> tuple[float, float, float, float]:
        (x0, y0), (x1, y1) = self.transform @ (col, row + height), self.transform @ (col + width, row)
        return min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)
