"""Undeclared fill values (float32's -3.4e38, NetCDF's 9.97e36) are nodata, with a notice naming the file."""

from __future__ import annotations

import logging

import numpy as np
import rasterio
import torch
from rasterio.transform import from_origin

from terramind_ft.data.raster import read_raster
from terramind_ft.tasks.base import BaseTask


def _float_raster(path, data):
    with rasterio.open(path, "w", driver="GTiff", width=data.shape[2], height=data.shape[1], count=data.shape[0],
                      dtype="float32", crs="EPSG:32633", transform=from_origin(500000, 5000000, 10, 10)) as dst:
        dst.write(data)  # no nodata declared


def test_float_min_fills_are_nodata_with_a_notice(tmp_path, caplog):
    data = np.random.default_rng(0).normal(-12, 3, (2, 16, 16)).astype(np.float32)
    data[:, :4, :4] = np.finfo(np.float32).min
    data[1, 10, 10] = 9.96921e36
    path = tmp_path / "s1.tif"
    _float_raster(path, data)
    with caplog.at_level(logging.WARNING, logger="terramind_ft"):
        values, invalid = read_raster(path, "S1GRD")
    assert invalid[:, :4, :4].all() and invalid[1, 10, 10] and invalid.sum() == 2 * 16 + 1
    notes = [r.getMessage() for r in caplog.records if str(path) in r.getMessage()]
    assert len(notes) == 1 and "33 pixel values" in notes[0] and "S1GRD" in notes[0]
    read_raster(path, "S1GRD")  # once per file
    assert len([r for r in caplog.records if str(path) in r.getMessage()]) == 1


def test_a_nan_loss_with_extreme_inputs_names_the_modality_band_and_files():
    class Stub:
        global_step, current_epoch = 7, 0
        trainer = None

    image = torch.zeros(1, 2, 8, 8)
    image[0, 1, 0, 0] = 3e37
    batch = {"image": {"S1GRD": image}, "filename": {"S1GRD": ["/data/s1/a.tif"]}}
    message = BaseTask._nan_message(Stub(), torch.tensor(float("nan")), batch, 3)
    assert "S1GRD band 1" in message and "/data/s1/a.tif" in message and "nodata" in message
