"""Rasters without a CRS: mixed with georeferenced ones they are an error; predicted on, the output says so."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import rasterio

from terramind_ft.data.datamodule import GenericMultiModalDataModule
from terramind_ft.data.synthetic import make_sen1floods11
from terramind_ft.errors import RasterMismatchError
from terramind_ft.inference.writers import write_prediction


def _strip_crs(path: Path) -> None:
    with rasterio.open(path) as src:
        data, profile = src.read(), src.profile
    profile.pop("crs", None)
    profile.pop("transform", None)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)


def test_a_file_without_crs_among_georeferenced_ones_is_an_error_naming_it(tmp_path):
    ds = make_sen1floods11(tmp_path / "data", size=32, splits={"train": 2, "val": 1})
    dm = GenericMultiModalDataModule(**ds.datamodule_kwargs())
    s1 = sorted(Path(ds.data_roots["S1GRD"]).glob("*.tif"))[0]
    _strip_crs(s1)
    with pytest.raises(RasterMismatchError) as err:
        dm.check()
    assert str(s1) in str(err.value) and "no CRS" in str(err.value)  # the grid check was silently off


def test_predicting_on_an_input_without_crs_says_so(tmp_path, caplog):
    ref = tmp_path / "plain.tif"
    with rasterio.open(ref, "w", driver="GTiff", width=8, height=8, count=1, dtype="uint8") as dst:
        dst.write(np.zeros((1, 8, 8), np.uint8))
    with caplog.at_level(logging.WARNING, logger="terramind_ft"):
        out = write_prediction(tmp_path / "plain_pred.tif", np.ones((8, 8), np.uint8), ref, kind="class_map")
    assert any("has no CRS" in r.getMessage() and str(out) in r.getMessage() for r in caplog.records)
    with rasterio.open(out) as dst:
        assert dst.crs is None
