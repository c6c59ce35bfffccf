"""Boundary mIoU: the IoU of the bands along the class contours (Cheng et al. 2021), off by default."""

from __future__ import annotations

import math

import numpy as np
import torch

from cli_configs import sen1floods11_config, write
from terramind_ft.cli import main
from terramind_ft.tasks.metrics import SegmentationMetrics, boundary_bands


def _band_by_definition(mask: np.ndarray, width: int) -> np.ndarray:
    """Pixels of the mask within Chebyshev distance ``width`` of a pixel outside it (or of the image's edge)."""
    h, w = mask.shape
    out = np.zeros_like(mask)
    for y in range(h):
        for x in range(w):
            if not mask[y, x]:
                continue
            y0, y1, x0, x1 = y - width, y + width + 1, x - width, x + width + 1
            if y0 < 0 or x0 < 0 or y1 > h or x1 > w or not mask[y0:y1, x0:x1].all():
                out[y, x] = True
    return out


def test_boundary_band_matches_its_definition():
    rng = np.random.default_rng(0)
    mask = rng.random((20, 24)) > 0.4
    for width in (1, 2):
        band = boundary_bands(torch.from_numpy(mask), width).numpy()
        np.testing.assert_array_equal(band, _band_by_definition(mask, width))


def test_boundary_miou_on_a_constructed_case():
    size = 50  # width = round(0.02 * hypot(50, 50)) = 1
    target = torch.zeros(1, size, size, dtype=torch.long)
    target[:, :, 25:] = 1
    shifted = torch.zeros_like(target)
    shifted[:, :, 27:] = 1  # the edge two columns to the right
    width = max(1, round(0.02 * math.hypot(size, size)))
    expected = []
    for c in (0, 1):
        t = _band_by_definition((target[0] == c).numpy(), width)
        p = _band_by_definition((shifted[0] == c).numpy(), width)
        expected.append((t & p).sum() / (t | p).sum())
    metrics = SegmentationMetrics(2, boundary=True)
    metrics.update(shifted, target)
    got = metrics.compute()
    assert math.isclose(float(got["Boundary_mIoU"]), float(np.mean(expected)), rel_tol=1e-6)
    assert float(got["Boundary_mIoU"]) < float(got["mIoU"])  # the edges are where the error is

    perfect = SegmentationMetrics(2, boundary=True)
    perfect.update(target, target)
    assert float(perfect.compute()["Boundary_mIoU"]) == 1.0


def test_ignored_pixels_do_not_count():
    target = torch.zeros(1, 40, 40, dtype=torch.long)
    target[:, :, 20:] = 1
    with_ignored = target.clone()
    with_ignored[:, :5] = -1
    pred = target.clone()
    pred[:, :5] = 1 - pred[:, :5]  # wrong only where the label is ignored
    metrics = SegmentationMetrics(2, ignore_index=-1, boundary=True)
    metrics.update(pred, with_ignored)
    assert float(metrics.compute()["Boundary_mIoU"]) == 1.0


def test_off_by_default_and_on_in_a_fit(tmp_path):
    metrics = SegmentationMetrics(2)
    metrics.update(torch.zeros(1, 8, 8, dtype=torch.long), torch.zeros(1, 8, 8, dtype=torch.long))
    assert "Boundary_mIoU" not in metrics.compute()
    config = sen1floods11_config(tmp_path)
    config["model"]["init_args"]["boundary_miou"] = True
    config["trainer"]["callbacks"] = [{"class_path": "ModelCheckpoint",
                                       "init_args": {"monitor": "val/Boundary_mIoU", "mode": "max"}}]
    cfg = write(config, tmp_path / "boundary.yaml")
    assert main(["fit", "--config", cfg]) == 0  # the pre-flight knows the metric it may monitor
    header = next((tmp_path / "run").glob("lightning_logs/version_*/metrics.csv")).read_text().splitlines()[0]
    assert "val/Boundary_mIoU" in header.split(",")
