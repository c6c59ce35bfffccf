"""The generators write what their docstrings promise: layouts, dtypes, bands, nodata, CRS, learnable water."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio

from terramind_ft.data.synthetic import make_classification, make_sen1floods11


def _read(path):
    with rasterio.open(path) as src:
        return src.read(), src.profile, src.crs, src.transform


def test_terramind_layout_files_and_rasters(flood):
    root = flood.root
    for split, word in (("train", "train"), ("val", "valid"), ("test", "test")):
        split_file = root / "splits" / f"flood_{word}_data.txt"
        assert flood.splits[split] == str(split_file)
        assert split_file.read_text().split() == flood.prefixes[split]
    assert [len(flood.prefixes[s]) for s in ("train", "val", "test")] == [4, 2, 2]
    prefix = flood.prefixes["train"][0]
    s2, s2_profile, crs, transform = _read(root / "data" / "S2L1CHand" / f"{prefix}_S2Hand.tif")
    s1, _, s1_crs, s1_transform = _read(root / "data" / "S1GRDHand" / f"{prefix}_S1Hand.tif")
    label, _, label_crs, label_transform = _read(root / "data" / "LabelHand" / f"{prefix}_LabelHand.tif")
    assert s2.shape == (13, 64, 64) and s2.dtype == np.uint16 and s2_profile["nodata"] is None
    assert s1.shape == (2, 64, 64) and s1.dtype == np.float32
    assert label.shape == (1, 64, 64) and label.dtype == np.int16
    assert str(crs) == str(s1_crs) == str(label_crs) == "EPSG:32630" == flood.crs
    assert transform == s1_transform == label_transform and transform.a == 10.0
    assert set(np.unique(label)) == {-1, 0, 1}
    assert 1000 < np.nanmean(s2) < 3000  # reflectance x 10000


def test_nan_and_ignore_patches_exist(flood):
    nan_total, ignore_total = 0, 0
    for p in flood.prefixes["train"]:
        s1, *_ = _read(Path(flood.data_roots["S1GRD"]) / f"{p}_S1Hand.tif")
        label, *_ = _read(Path(flood.label_root) / f"{p}_LabelHand.tif")
        nan_total += np.isnan(s1).sum()
        ignore_total += (label == -1).sum()
    assert nan_total > 0 and ignore_total > 0


def test_water_is_learnable(flood):
    """Water pixels are dark in NIR/SWIR and low in S1 VV: a threshold separates the classes well."""
    nir_water, nir_land, vv_water, vv_land = [], [], [], []
    for p in flood.prefixes["train"]:
        s2, *_ = _read(Path(flood.data_roots["S2L1C"]) / f"{p}_S2Hand.tif")
        s1, *_ = _read(Path(flood.data_roots["S1GRD"]) / f"{p}_S1Hand.tif")
        label, *_ = _read(Path(flood.label_root) / f"{p}_LabelHand.tif")
        nir_water.append(s2[7][label[0] == 1]); nir_land.append(s2[7][label[0] == 0])
        vv_water.append(s1[0][label[0] == 1]); vv_land.append(s1[0][label[0] == 0])
    nir_water, nir_land = np.concatenate(nir_water), np.concatenate(nir_land)
    vv_water, vv_land = np.concatenate(vv_water), np.concatenate(vv_land)
    assert nir_water.size > 0 and nir_land.size > 0
    threshold = (nir_water.mean() + nir_land.mean()) / 2
    accuracy = ((nir_water < threshold).sum() + (nir_land >= threshold).sum()) / (nir_water.size + nir_land.size)
    assert accuracy > 0.95
    assert np.nanmean(vv_water) < np.nanmean(vv_land) - 5


def test_original_layout_csv_splits(flood_original):
    root = flood_original.root / "v1.1"
    for split, word in (("train", "train"), ("val", "valid"), ("test", "test")):
        csv = root / "splits" / "flood_handlabeled" / f"flood_{word}_data.csv"
        rows = [line.split(",") for line in csv.read_text().splitlines()]
        assert rows == [[f"{p}_S1Hand.tif", f"{p}_LabelHand.tif"] for p in flood_original.prefixes[split]]
    hand = root / "data" / "flood_events" / "HandLabeled"
    p = flood_original.prefixes["test"][0]
    for folder, suffix in (("S2Hand", "S2Hand"), ("S1Hand", "S1Hand"), ("LabelHand", "LabelHand")):
        assert (hand / folder / f"{p}_{suffix}.tif").is_file()


def test_same_seed_same_data_other_seed_other_data(tmp_path):
    a = make_sen1floods11(tmp_path / "a", size=32, splits={"train": 1}, seed=3)
    b = make_sen1floods11(tmp_path / "b", size=32, splits={"train": 1}, seed=3)
    c = make_sen1floods11(tmp_path / "c", size=32, splits={"train": 1}, seed=4)
    assert a.prefixes == b.prefixes != c.prefixes
    pa = Path(a.data_roots["S1GRD"]) / f"{a.prefixes['train'][0]}_S1Hand.tif"
    pb = Path(b.data_roots["S1GRD"]) / f"{b.prefixes['train'][0]}_S1Hand.tif"
    np.testing.assert_array_equal(_read(pa)[0], _read(pb)[0])


def test_declared_s2_nodata(tmp_path):
    d = make_sen1floods11(tmp_path, size=32, splits={"train": 1}, s2_nodata=0)
    s2, profile, *_ = _read(Path(d.data_roots["S2L1C"]) / f"{d.prefixes['train'][0]}_S2Hand.tif")
    assert profile["nodata"] == 0 and (s2 == 0).any()


def test_bad_layout_rejected(tmp_path):
    with pytest.raises(ValueError, match="layout"):
        make_sen1floods11(tmp_path, layout="pangaea")


@pytest.mark.parametrize("labels", ["csv", "files"])
def test_classification_variant(tmp_path, labels):
    d = make_classification(tmp_path, labels=labels, num_classes=3, class_names=["a", "b", "c"])
    assert d.task == "classification" and d.class_names == ("a", "b", "c")
    assert set(d.labels.values()) == {0, 1, 2}
    sample = d.prefixes["train"][0]
    s2, *_ = _read(Path(d.data_roots["S2L2A"]) / f"{sample}.tif")
    s1, *_ = _read(Path(d.data_roots["S1RTC"]) / f"{sample}.tif")
    assert s2.shape == (12, 32, 32) and s1.shape == (2, 32, 32)
    if labels == "csv":
        rows = dict(line.split(",") for line in Path(d.label_root).read_text().splitlines())
        assert rows[sample] == d.class_names[d.labels[sample]]
    else:
        assert int((Path(d.label_root) / f"{sample}.txt").read_text()) == d.labels[sample]


def test_datamodule_kwargs_overrides(flood):
    kwargs = flood.datamodule_kwargs(batch_size=7, val_split=None)
    assert kwargs["batch_size"] == 7 and kwargs["val_split"] is None
    assert kwargs["train_data_root"] == flood.data_roots and kwargs["image_grep"]["S1GRD"] == "*_S1Hand.tif"
    assert kwargs["modalities"] == ["S2L1C", "S1GRD"] and kwargs["num_classes"] == 2
