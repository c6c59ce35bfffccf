"""SceneTiles: a large scene as standardised tiles, read strip by strip (memory set by the width, not the
height), equal to standardising the whole raster in memory."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from rasterio.transform import Affine

from terramind_ft.inference.tiles import SceneTiles, tile_windows
from terramind_ft.modalities import MODALITIES


def _write(path, data, nodata=None):
    transform = Affine(10, 0, 500000, 0, -10, 4000000)
    with rasterio.open(path, "w", driver="GTiff", width=data.shape[2], height=data.shape[1], count=data.shape[0],
                       dtype=data.dtype, crs="EPSG:32632", transform=transform, nodata=nodata) as dst:
        dst.write(data)
    return path


def test_tiles_equal_the_in_memory_standardisation(tmp_path):
    rng = np.random.default_rng(0)
    s1 = rng.normal(-15, 4, (2, 150, 100)).astype(np.float32)
    s1[:, 5:9, 7:20] = np.nan  # invalid values
    dem = rng.uniform(0, 3000, (1, 150, 100)).astype(np.float32)
    dem[0, 100:120, 50:60] = -9999
    sources = {"S1GRD": _write(tmp_path / "s1.tif", s1), "DEM": _write(tmp_path / "dem.tif", dem, nodata=-9999)}
    tiles = SceneTiles(sources, 64, nodata_fill=0.0)
    assert [(t[0], t[1]) for t in tiles.windows] == [(r, c) for r in (0, 64, 86) for c in (0, 36)]
    seen = list(tiles)
    assert len(seen) == len(tiles) == 6
    for tile in seen:
        rows, cols = slice(tile.row, tile.row + 64), slice(tile.col, tile.col + 64)
        for name, raw in (("S1GRD", s1), ("DEM", dem)):
            m = MODALITIES[name]
            expected = (raw[:, rows, cols] - np.array(m.mean)[:, None, None]) / np.array(m.std)[:, None, None]
            invalid = ~np.isfinite(raw[:, rows, cols]) | (raw[:, rows, cols] == -9999 if name == "DEM" else False)
            expected[invalid] = 0.0
            np.testing.assert_allclose(tile.inputs[name].numpy(), expected, rtol=1e-5, atol=1e-5)
        bad = (~np.isfinite(s1[:, rows, cols])).any(0) | (dem[0, rows, cols] == -9999)
        assert tile.invalid_share == pytest.approx(bad.mean())
        left, top = 500000 + 10 * tile.col, 4000000 - 10 * tile.row
        assert tile.bounds == pytest.approx((left, top - 640, left + 640, top))


def test_memory_is_set_by_the_width_not_the_height(tmp_path):
    peaks = []
    for height in (256, 1024):
        data = np.ones((2, height, 96), np.float32)
        tiles = SceneTiles({"S1GRD": _write(tmp_path / f"s1_{height}.tif", data)}, 64)
        assert sum(1 for _ in tiles) == (height // 64) * 2
        peaks.append(tiles.peak_strip_bytes)
    assert peaks[0] == peaks[1] == 2 * 64 * 96 * 4 + 64 * 96  # one strip: 2 float32 bands + its mask


def test_small_scene_is_one_tile_of_its_own_size():
    assert tile_windows(40, 30, 224) == [(0, 0, 40, 30)]
    assert tile_windows(224, 448, 224) == [(0, 0, 224, 224), (0, 224, 224, 224)]
