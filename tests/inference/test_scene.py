"""Streaming scene prediction: same pixels as in-memory tiling, georeference and nodata, grids, memory, atomicity."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from terramind_ft.data.synthetic import make_scene
from terramind_ft.errors import ConfigError, DataNotFoundError, InferenceError, RasterMismatchError
from terramind_ft.inference.geotiff import CLASS_NODATA
from terramind_ft.inference.scene import predict_scene
from terramind_ft.inference.tiling import plan_axis, tiled_inference
from terramind_ft.modalities import MODALITIES

MODALITY_BANDS = {"S2L2A": 12, "S1GRD": 2}


class FloodModel(torch.nn.Module):
    """Two 3x3 convolutions over S2 + S1 (receptive radius 2): two logits per pixel."""

    def __init__(self, out_channels: int = 2):
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(torch.nn.Conv2d(14, 8, 3, padding=1), torch.nn.GELU(),
                                       torch.nn.Conv2d(8, out_channels, 3, padding=1))

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.net(torch.cat([inputs["S2L2A"], inputs["S1GRD"]], dim=1))


def cheap_model(inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """Two "logits" per pixel at almost no compute, for tests about the data path rather than the model."""
    return inputs["S2L2A"][:, 3:5] - inputs["S1GRD"]


def read_standardised(paths: dict[str, Path]) -> tuple[dict[str, torch.Tensor], np.ndarray]:
    """Whole rasters, standardised with the catalogue stats, invalid -> 0; plus the any-band invalid mask."""
    inputs, invalid_any = {}, None
    for modality, path in paths.items():
        with rasterio.open(path) as src:
            raw = src.read()
            invalid = ~np.isfinite(raw.astype(np.float32))
            if src.nodata is not None:
                invalid |= raw == src.nodata
        m = MODALITIES[modality]
        values = (raw.astype(np.float32) - np.float32(m.mean)[:, None, None]) / np.float32(m.std)[:, None, None]
        values[invalid] = 0.0
        inputs[modality] = torch.from_numpy(values)[None]
        invalid_any = invalid.any(0) if invalid_any is None else invalid_any | invalid.any(0)
    return inputs, invalid_any


@pytest.fixture(scope="module")
def small_scene(tmp_path_factory):
    return make_scene(tmp_path_factory.mktemp("scene"), height=300, width=410, nodata_box=(40, 60, 30, 50))


@pytest.mark.parametrize("blend,padding", [("cosine", "reflect"), ("gaussian", None)])
def test_streamed_scene_equals_in_memory_tiling(small_scene, tmp_path, blend, padding):
    model = FloodModel().eval()
    out = tmp_path / "pred.tif"
    result = predict_scene(model, small_scene.paths, out, crop=64, stride=48, delta=4, batch_size=5, blend=blend,
                           padding=padding, class_names=small_scene.class_names, write_probabilities=True,
                           verbose=False)
    inputs, invalid = read_standardised(small_scene.paths)
    logits = tiled_inference(model, inputs, crop=64, stride=48, delta=4, blend=blend, padding=padding)[0]
    expected_probs = torch.softmax(logits, dim=0).numpy()
    with rasterio.open(out) as src:
        classes = src.read(1)
    with rasterio.open(result.probabilities_path) as src:
        probs = src.read()
    assert invalid.sum() == 30 * 50 and result.nodata_pixels == invalid.sum()
    np.testing.assert_array_equal(classes == CLASS_NODATA, invalid)
    np.testing.assert_allclose(probs[:, ~invalid], expected_probs[:, ~invalid], atol=1e-5)
    assert np.isnan(probs[:, invalid]).all()
    decided = np.abs(expected_probs[1] - 0.5) > 1e-4  # argmax is only defined away from ties
    np.testing.assert_array_equal(classes[~invalid & decided], expected_probs.argmax(0)[~invalid & decided])
    rows = plan_axis(300, 64, 48, 4, padding is not None)
    cols = plan_axis(410, 64, 48, 4, padding is not None)
    assert result.chips == len(rows) * len(cols) and result.max_rows_in_flight <= 64


def test_output_is_a_georeferenced_cog_with_classes_colours_and_nodata(tmp_path):
    scene = make_scene(tmp_path / "scene", height=1100, width=700, nodata_box=(500, 100, 64, 64))
    out = tmp_path / "out" / "flood.tif"
    predict_scene(cheap_model, scene.paths, out, crop=128, stride=96, batch_size=8,
                  class_names=["dry", "flooded"], verbose=False)
    with rasterio.open(scene.paths["S2L2A"]) as ref, rasterio.open(out) as src:
        assert (src.crs, src.transform, src.shape) == (ref.crs, ref.transform, ref.shape)
        assert src.dtypes[0] == "uint8" and src.nodata == CLASS_NODATA
        assert src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        assert src.block_shapes[0] == (512, 512) and src.compression.name == "deflate"
        assert src.overviews(1), "a COG carries overviews"
        assert src.descriptions[0] == "class (0=dry, 1=flooded)"
        assert json.loads(src.tags()["CLASS_NAMES"]) == ["dry", "flooded"]
        assert src.colormap(1)[1][3] == 255 and src.colormap(1)[CLASS_NODATA][3] == 0
        mask = src.read_masks(1)
        classes = src.read(1)
    assert (mask[500:564, 100:164] == 0).all() and (classes[500:564, 100:164] == CLASS_NODATA).all()
    assert (mask == 0).sum() == 64 * 64 and set(np.unique(classes)) <= {0, 1, CLASS_NODATA}
    assert not [p for p in out.parent.iterdir() if p.name != "flood.tif"], "temporary files left behind"


def test_modalities_on_other_grids_are_warped_onto_the_reference(tmp_path):
    """S1 at 20 m, shifted by 30 m and 20 m: warped strip by strip it must match a whole-raster warp."""
    scene = make_scene(tmp_path / "scene", height=600, width=320, resolutions={"S1GRD": 20.0},
                       offsets={"S1GRD": (-30.0, 20.0)}, label=False)
    seen: list[torch.Tensor] = []

    def recorder(inputs):
        seen.append(inputs["S1GRD"].clone())
        return FloodModel()(inputs)

    predict_scene(recorder, scene.paths, tmp_path / "p.tif", crop=256, stride=192, delta=0, padding=None,
                  batch_size=4, verbose=False)
    from rasterio.vrt import WarpedVRT

    with rasterio.open(scene.paths["S2L2A"]) as ref, rasterio.open(scene.paths["S1GRD"]) as src:
        with WarpedVRT(src, crs=ref.crs, transform=ref.transform, width=ref.width, height=ref.height,
                       resampling=rasterio.enums.Resampling.bilinear, add_alpha=True) as vrt:
            warped, alpha = vrt.read([1, 2]), vrt.read(3)
    m = MODALITIES["S1GRD"]
    expected = (warped - np.float32(m.mean)[:, None, None]) / np.float32(m.std)[:, None, None]
    expected[:, alpha == 0] = 0.0
    chips = torch.cat(seen).numpy()
    positions = [(r, c) for r in plan_axis(600, 256, 192, 0, False) for c in plan_axis(320, 256, 192, 0, False)]
    assert len(chips) == len(positions) == 6
    for chip, (r, c) in zip(chips, positions):
        np.testing.assert_allclose(chip, expected[:, r.start:r.start + 256, c.start:c.start + 256], atol=1e-5)
    # The shifted S1 grid leaves the last column and the last rows uncovered, which are nodata in the output.
    assert (alpha[:, -1] == 0).all() and (alpha[-1] == 0).all()
    with rasterio.open(tmp_path / "p.tif") as out:
        classes = out.read(1)
    assert (classes[:, -1] == CLASS_NODATA).all() and (classes[-1] == CLASS_NODATA).all()
    assert (classes[:-3, :-3] != CLASS_NODATA).all()


def test_misaligned_grids_are_refused_when_alignment_is_off(tmp_path):
    scene = make_scene(tmp_path / "s", height=64, width=64, resolutions={"S1GRD": 20.0}, label=False)
    with pytest.raises(RasterMismatchError, match=r"S1GRD/scene.tif.*not on the grid of the reference .*S2L2A"):
        predict_scene(FloodModel(), scene.paths, tmp_path / "p.tif", crop=64, stride=48, align=False, verbose=False)
    far = make_scene(tmp_path / "far", height=64, width=64, modalities=("S1GRD",), origin=(900000.0, 1000.0),
                     label=False)
    with pytest.raises(RasterMismatchError, match="does not overlap"):
        predict_scene(FloodModel(), {"S2L2A": scene.paths["S2L2A"], "S1GRD": far.paths["S1GRD"]},
                      tmp_path / "p.tif", crop=64, stride=48, verbose=False)
    assert not (tmp_path / "p.tif").exists()


def test_memory_stays_bounded_by_a_row_of_chips_on_a_large_scene(tmp_path):
    """3000 x 2000 px, S2 (12 bands) + S1 at 20 m: the arrays traced at peak are a few chip rows, not the scene."""
    height, width, crop, batch_size = 3000, 2000, 256, 4
    scene = make_scene(tmp_path / "scene", height=height, width=width, resolutions={"S1GRD": 20.0}, label=False,
                       compress=None)
    tracemalloc.start()
    try:
        result = predict_scene(cheap_model, scene.paths, tmp_path / "big.tif", crop=crop, stride=192, batch_size=batch_size,
                               layout="gtiff", verbose=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    bands = sum(MODALITY_BANDS.values())
    scene_float32 = height * width * bands * 4  # what whole-scene inference holds for its inputs (336 MB)
    chip_row_float32 = crop * width * bands * 4  # one row of chips as float32 (28.7 MB)
    batch_float32 = batch_size * bands * crop * crop * 4  # the model's input batch (14.7 MB)
    # numpy allocations (rasterio reads, accumulators, chips) are traced; torch's own are not, but they are the
    # model's activations for one batch. Budget: two chip rows (the raw strip, its masks, the accumulator,
    # the finished rows) plus the batch; the scene is 11.7 chip rows tall.
    assert peak < 2 * chip_row_float32 + batch_float32, f"peak {peak / 1e6:.1f} MB"
    assert peak < scene_float32 / 4
    assert result.max_rows_in_flight <= crop and result.peak_buffer_bytes < 2 * chip_row_float32 + batch_float32
    with rasterio.open(result.output_path) as src:
        assert src.shape == (height, width) and src.overviews(1)
        assert src.read(1, window=((height - 10, height), (0, width))).max() < CLASS_NODATA  # rows written


class ExplodingModel(FloodModel):
    def __init__(self, fail_at: int):
        super().__init__()
        self.calls, self.fail_at = 0, fail_at

    def forward(self, inputs):
        self.calls += 1
        if self.calls == self.fail_at:
            raise RuntimeError("simulated crash in the middle of the scene")
        return super().forward(inputs)


@pytest.mark.parametrize("layout", ["cog", "gtiff"])
def test_a_crash_mid_scene_leaves_no_output_and_no_temporary_files(small_scene, tmp_path, layout):
    out = tmp_path / "pred.tif"
    model = ExplodingModel(fail_at=6)
    with pytest.raises(RuntimeError, match="simulated crash"):
        predict_scene(model, small_scene.paths, out, crop=64, stride=48, batch_size=4, layout=layout,
                      write_probabilities=True, verbose=False)
    assert model.calls == 6  # it did crash mid-scene, after rows had been written
    assert list(tmp_path.iterdir()) == []


def test_a_killed_process_leaves_only_a_hidden_partial_file(small_scene, tmp_path):
    out = tmp_path / "pred.tif"
    started = tmp_path / "started"
    script = textwrap.dedent(f"""
        import time, torch
        from pathlib import Path
        from terramind_ft.inference.scene import predict_scene
        calls = []
        def model(inputs):
            calls.append(1)
            if len(calls) == 4:
                Path({str(started)!r}).touch()
                time.sleep(120)
            return torch.zeros(inputs["S2L2A"].shape[0], 2, *inputs["S2L2A"].shape[-2:])
        predict_scene(model, {json.dumps({k: str(v) for k, v in small_scene.paths.items()})}, {str(out)!r},
                      crop=64, stride=48, batch_size=2, layout="gtiff", verbose=False)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=tmp_path)
    try:
        deadline = time.monotonic() + 90
        while not started.exists():
            assert proc.poll() is None, "the prediction process ended before the simulated hang"
            assert time.monotonic() < deadline, "the prediction process did not start in 90 s"
            time.sleep(0.1)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    leftovers = sorted(p.name for p in tmp_path.iterdir() if p != started)
    assert not out.exists()
    assert len(leftovers) == 1 and leftovers[0].startswith(".pred.tif.partial-"), leftovers


def test_binary_single_logit_and_regression_outputs(small_scene, tmp_path):
    one_logit = FloodModel(out_channels=1).eval()
    res = predict_scene(one_logit, small_scene.paths, tmp_path / "bin.tif", crop=64, stride=48, verbose=False,
                        write_probabilities=True, class_names=["dry", "wet"])
    inputs, invalid = read_standardised(small_scene.paths)
    logit = tiled_inference(one_logit, inputs, crop=64, stride=48)[0, 0].numpy()
    with rasterio.open(res.output_path) as src, rasterio.open(res.probabilities_path) as prob:
        classes, p = src.read(1), prob.read(1)
        assert prob.count == 1 and prob.descriptions == ("probability of wet",)
    sure = ~invalid & (np.abs(logit) > 1e-4)
    np.testing.assert_array_equal(classes[sure], (logit > 0)[sure])
    np.testing.assert_allclose(p[~invalid], 1 / (1 + np.exp(-logit[~invalid])), atol=1e-5)

    res = predict_scene(FloodModel(out_channels=3), small_scene.paths, tmp_path / "reg.tif", task="regression",
                        crop=64, stride=48, verbose=False)
    with rasterio.open(res.output_path) as src:
        values = src.read()
        assert src.count == 3 and src.dtypes[0] == "float32"
    assert np.isnan(values[:, invalid]).all() and np.isfinite(values[:, ~invalid]).all()


def test_inputs_that_cannot_be_served_are_explained(small_scene, tmp_path):
    out = tmp_path / "p.tif"
    with pytest.raises(DataNotFoundError, match=r"missing.tif \(modality 'S1GRD'\)"):
        predict_scene(FloodModel(), {**small_scene.paths, "S1GRD": tmp_path / "missing.tif"}, out, verbose=False)
    with pytest.raises(RasterMismatchError, match=r"provides 12 bands but the standardisation has 13 means"):
        predict_scene(FloodModel(), {"S2L1C": small_scene.paths["S2L2A"]}, out, verbose=False)
    with pytest.raises(ConfigError, match=r"'mystery'.*not in the TerraMind catalogue.*means\['mystery'\]"):
        predict_scene(FloodModel(), {"mystery": small_scene.paths["S2L2A"]}, out, verbose=False)
    with pytest.raises(InferenceError, match="returns 2 channel.*num_classes=3"):
        predict_scene(FloodModel(), small_scene.paths, out, num_classes=3, crop=64, stride=48, verbose=False)
    assert list(tmp_path.iterdir()) == []


def test_band_selection_and_user_statistics(small_scene, tmp_path):
    """Four S2 bands with user stats and no nodata value: the model receives (raw - mean) / std of those bands
    (the chip overlaps the scene's nodata box, whose zeros are now plain values)."""
    seen = []

    def model(inputs):
        seen.append(inputs["S2L2A"])
        return torch.zeros(inputs["S2L2A"].shape[0], 2, 64, 64)

    predict_scene(model, {"S2L2A": small_scene.paths["S2L2A"]}, tmp_path / "p.tif", crop=64, stride=64, delta=0,
                  padding=None, band_indexes={"S2L2A": [4, 3, 2, 8]}, nodata={"S2L2A": None},
                  means={"S2L2A": [1000.0, 1000.0, 1000.0, 2000.0]}, stds={"S2L2A": [500.0] * 4}, verbose=False)
    with rasterio.open(small_scene.paths["S2L2A"]) as src:
        raw = src.read([4, 3, 2, 8], window=((0, 64), (0, 64))).astype(np.float32)
    expected = (raw - np.float32([1000, 1000, 1000, 2000])[:, None, None]) / 500.0
    np.testing.assert_allclose(seen[0][0].numpy(), expected, rtol=1e-6)


@pytest.mark.parametrize(("out_dtype", "nodata", "colours"), [("int16", -1, False), ("uint16", 65535, True),
                                                               ("float32", -1, False)])
def test_out_dtype_writes_the_same_classes_in_another_type(small_scene, tmp_path, out_dtype, nodata, colours):
    """TerraTorch's --out_dtype: the class map in that type, with its nodata (-1 signed/float, the largest value
    unsigned); the same classes as the default uint8 map, overviews by nearest neighbour still."""
    default = predict_scene(cheap_model, small_scene.paths, tmp_path / "u8.tif", crop=64, stride=48, verbose=False)
    other = predict_scene(cheap_model, small_scene.paths, tmp_path / f"{out_dtype}.tif", crop=64, stride=48,
                          verbose=False, out_dtype=out_dtype, write_probabilities=True)
    with rasterio.open(default.output_path) as a, rasterio.open(other.output_path) as b, \
            rasterio.open(other.probabilities_path) as p:
        assert b.dtypes[0] == out_dtype and b.nodata == nodata and p.dtypes[0] == "float32"
        classes_a, classes_b = a.read(1), b.read(1)
        assert (b.tags(ns="rio_overview").get("resampling") in (None, "nearest"))
        has_colours = True
        try:
            b.colormap(1)
        except ValueError:
            has_colours = False
        assert has_colours == colours
    valid = classes_a != CLASS_NODATA
    np.testing.assert_array_equal(classes_b[valid], classes_a[valid])
    assert (classes_b[~valid] == nodata).all() and (~valid).any()
