"""Prediction GeoTIFFs: georeference copied, shape mismatch refused, dtypes, nodata, class names, colours."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import from_origin

from terramind_ft.errors import InferenceError
from terramind_ft.inference.writers import PredictionWriter, write_prediction


@pytest.fixture
def source(tmp_path):
    path = tmp_path / "in" / "chip_S2.tif"
    path.parent.mkdir()
    with rasterio.open(path, "w", driver="GTiff", count=2, height=40, width=56, dtype="float32", crs="EPSG:32630",
                       transform=from_origin(500000, 4000000, 10, 10)) as dst:
        dst.write(np.zeros((2, 40, 56), np.float32))
    return path


def test_class_map_copies_georeference_and_marks_nodata(tmp_path, source):
    classes = np.random.default_rng(0).integers(0, 3, (40, 56))
    nodata = np.zeros((40, 56), bool)
    nodata[:5] = True
    out = write_prediction(tmp_path / "o" / "c.tif", classes, source, kind="class_map", class_names=["a", "b", "c"],
                           nodata_mask=nodata)
    with rasterio.open(source) as src, rasterio.open(out) as dst:
        assert (dst.crs, dst.transform, dst.shape) == (src.crs, src.transform, src.shape)
        values = dst.read(1)
        assert dst.dtypes == ("uint8",) and dst.nodata == 255
        assert (values[:5] == 255).all() and np.array_equal(values[5:], classes[5:])
        assert dst.descriptions == ("class (0=a, 1=b, 2=c)",)
        assert json.loads(dst.tags()["CLASS_NAMES"]) == ["a", "b", "c"]
        assert dst.colormap(1)[0][3] == 255 and dst.colormap(1)[255][3] == 0
    assert not list(out.parent.glob(".*")), "no temporary file may be left behind"


def test_probabilities_are_float32_with_class_band_names(tmp_path, source):
    probs = torch.softmax(torch.randn(3, 40, 56), 0)
    out = write_prediction(tmp_path / "p.tif", probs, source, kind="probabilities", class_names=["a", "b", "c"])
    with rasterio.open(out) as dst:
        assert dst.dtypes == ("float32",) * 3 and dst.descriptions == ("a", "b", "c")
        np.testing.assert_allclose(dst.read(), probs.numpy(), rtol=1e-6)


def test_shape_mismatch_is_refused(tmp_path, source):
    with pytest.raises(InferenceError, match="does not match the grid"):
        write_prediction(tmp_path / "x.tif", np.zeros((32, 56), np.uint8), source, kind="class_map")
    assert not (tmp_path / "x.tif").exists()


class _Trainer:
    """The attributes of a single-process Lightning Trainer that PredictionWriter reads."""

    world_size = 1
    is_global_zero = True

    def __init__(self, root):
        self.default_root_dir = str(root)


def test_writer_callback_names_outputs_and_refuses_collisions(tmp_path, source):
    writer = PredictionWriter(output_dir=str(tmp_path / "preds"))
    trainer = _Trainer(tmp_path)
    writer.on_predict_start(trainer, None)
    pred = {"class_map": torch.zeros(1, 40, 56, dtype=torch.uint8), "probabilities": torch.full((1, 2, 40, 56), 0.5),
            "filename": {"S2L1C": [str(source)]}, "nodata": torch.zeros(1, 40, 56, dtype=torch.bool),
            "class_names": ["a", "b"]}
    writer.write_on_batch_end(trainer, None, pred, None, None, 0)
    writer.on_predict_end(trainer, None)
    manifest = json.loads((tmp_path / "preds" / "predictions.json").read_text())
    assert [p.rsplit("/", 1)[-1] for p in manifest[str(source)]] == ["chip_S2_pred.tif", "chip_S2_probabilities.tif"]
    other = source.parent.parent / "other" / source.name
    other.parent.mkdir()
    other.write_bytes(source.read_bytes())
    pred["filename"] = {"S2L1C": [str(other)]}
    with pytest.raises(InferenceError, match="would both be written"):
        writer.write_on_batch_end(trainer, None, pred, None, None, 1)


def test_out_dtype_of_in_memory_outputs_and_what_it_refuses(tmp_path):
    """--out_dtype also reaches the in-memory writer (untiled predict); it never truncates regression values or
    probabilities; a class count the type cannot hold is refused."""
    from rasterio.transform import from_origin

    from terramind_ft.errors import ConfigError, InferenceError
    from terramind_ft.inference.geotiff import check_out_dtype
    from terramind_ft.inference.writers import write_prediction

    ref = tmp_path / "ref.tif"
    with rasterio.open(ref, "w", driver="GTiff", width=16, height=16, count=1, dtype="float32", crs="EPSG:32633",
                       transform=from_origin(0, 16, 1, 1)) as dst:
        dst.write(np.zeros((1, 16, 16), np.float32))
    mask = np.zeros((16, 16), bool)
    mask[:2] = True
    classes = np.tile(np.arange(16) % 3, (16, 1))
    path = write_prediction(tmp_path / "c.tif", classes, ref, kind="class_map", nodata_mask=mask, out_dtype="int16")
    with rasterio.open(path) as src:
        out = src.read(1)
        assert src.dtypes[0] == "int16" and src.nodata == -1
    assert (out[:2] == -1).all() and (out[2:] == classes[2:]).all()
    path = write_prediction(tmp_path / "v.tif", np.full((16, 16), 1.25), ref, kind="values", out_dtype="float64")
    with rasterio.open(path) as src:
        assert src.dtypes[0] == "float64"
    path = write_prediction(tmp_path / "p.tif", np.full((3, 16, 16), 0.3), ref, kind="probabilities",
                            out_dtype="int16")
    with rasterio.open(path) as src:
        assert src.dtypes[0] == "float32"
    with pytest.raises(InferenceError, match="do not fit a uint8 class map"):
        write_prediction(tmp_path / "x.tif", np.full((16, 16), 300), ref, kind="class_map", out_dtype="uint8")
    with pytest.raises(ConfigError, match="would truncate regression values") as err:
        check_out_dtype("int16", "regression")
    assert err.value.key == "out_dtype"
    with pytest.raises(ConfigError, match="out_dtype must be one of"):
        check_out_dtype("int64", "segmentation")
