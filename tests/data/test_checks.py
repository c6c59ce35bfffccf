"""Fail early and clearly: every error of check()/setup() names the file, the modality and the config key."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import rasterio
import torch
from affine import Affine

from terramind_ft.data.datamodule import GenericMultiModalDataModule
from terramind_ft.data.raster import write_raster
from terramind_ft.errors import ConfigError, DataError, DataNotFoundError, RasterMismatchError


def _file(data, modality, split="train", i=0):
    suffix = {"S2L1C": "_S2Hand.tif", "S1GRD": "_S1Hand.tif", "label": "_LabelHand.tif"}[modality]
    root = data.label_root if modality == "label" else data.data_roots[modality]
    return Path(root) / f"{data.prefixes[split][i]}{suffix}"


def _rewrite(path, fn):
    """Rewrite a raster through ``fn(array, crs, transform) -> (array, crs, transform)``."""
    with rasterio.open(path) as src:
        array, crs, transform, nodata = src.read(), src.crs, src.transform, src.nodata
    array, crs, transform = fn(array, crs, transform)
    write_raster(path, array, crs=crs, transform=transform, nodata=nodata, compress=None)


def test_valid_data_passes_and_setup_runs_the_same_check(fresh_flood):
    dm = GenericMultiModalDataModule(**fresh_flood.datamodule_kwargs(batch_size=2))
    report = dm.check()
    assert report.samples == {"train": 3, "val": 2, "predict": 5}
    assert "train: 3 samples, raster size(s) 32x32" in str(report)
    os.remove(_file(fresh_flood, "S1GRD", "val", 1))
    dm = GenericMultiModalDataModule(**fresh_flood.datamodule_kwargs(batch_size=2))
    with pytest.raises(DataNotFoundError, match=f"sample '{fresh_flood.prefixes['val'][1]}', modality 'S1GRD'"):
        dm.setup("fit")


def test_missing_file_lists_modality_and_folder(fresh_flood):
    path = _file(fresh_flood, "S1GRD", "train", 2)
    os.remove(path)
    with pytest.raises(DataNotFoundError) as err:
        GenericMultiModalDataModule(**fresh_flood.datamodule_kwargs()).check(["train"])
    message = str(err.value)
    prefix = fresh_flood.prefixes["train"][2]
    assert f"sample '{prefix}', modality 'S1GRD': no file {path.parent}/{prefix}*_S1Hand.tif" in message
    assert f"split file {fresh_flood.splits['train']}" in message and "data.init_args.train_data_root" in message


def test_several_matching_files_are_named(fresh_flood):
    path = _file(fresh_flood, "S2L1C")
    prefix = fresh_flood.prefixes["train"][0]
    os.rename(path, path.with_name(f"{prefix}_a_S2Hand.tif"))
    (path.parent / f"{prefix}_b_S2Hand.tif").write_bytes(b"")
    with pytest.raises(DataError, match="ambiguous") as err:
        GenericMultiModalDataModule(**fresh_flood.datamodule_kwargs()).check(["train"])
    message = str(err.value)
    assert f"sample '{prefix}', modality 'S2L1C': 2 files match" in message
    assert f"{prefix}_a_S2Hand.tif" in message and f"{prefix}_b_S2Hand.tif" in message


def test_band_count_mismatch_names_file_modality_and_fix(fresh_flood):
    path = _file(fresh_flood, "S2L1C", "train", 1)
    _rewrite(path, lambda a, c, t: (a[:12], c, t))  # an L2A-like 12-band file under S2L1C
    with pytest.raises(RasterMismatchError) as err:
        GenericMultiModalDataModule(**fresh_flood.datamodule_kwargs()).check(["train"])
    message = str(err.value)
    assert f"{path} (modality 'S2L1C') has 12 bands, expected 13 from the S2L1C catalogue entry" in message
    assert "data.init_args.dataset_bands.S2L1C" in message


def test_band_count_checked_against_dataset_bands(fresh_flood):
    kwargs = fresh_flood.datamodule_kwargs(dataset_bands={"S1GRD": ["VV"]})
    with pytest.raises(RasterMismatchError, match=r"\(modality 'S1GRD'\) has 2 bands, expected 1 from "
                                                  r"dataset_bands.S1GRD"):
        GenericMultiModalDataModule(**kwargs).check(["train"])


def test_size_mismatch_between_modalities(fresh_flood):
    path = _file(fresh_flood, "S1GRD")
    _rewrite(path, lambda a, c, t: (a[:, :16, :16], c, t))
    with pytest.raises(RasterMismatchError) as err:
        GenericMultiModalDataModule(**fresh_flood.datamodule_kwargs()).check(["train"])
    message = str(err.value)
    s2 = _file(fresh_flood, "S2L1C")
    assert f"{path} (modality 'S1GRD') is 16x16 but {s2} (modality 'S2L1C') is 32x32" in message


def test_label_size_crs_and_transform_mismatch(fresh_flood):
    _rewrite(_file(fresh_flood, "label", i=0), lambda a, c, t: (a, "EPSG:4326", Affine(1e-4, 0, 10, 0, -1e-4, 50)))
    _rewrite(_file(fresh_flood, "S1GRD", i=1), lambda a, c, t: (a, c, Affine(t.a, t.b, t.c + 3 * t.a, t.d, t.e, t.f)))
    _rewrite(_file(fresh_flood, "label", i=2), lambda a, c, t: (a[:, :30], c, t))
    with pytest.raises(RasterMismatchError) as err:
        GenericMultiModalDataModule(**fresh_flood.datamodule_kwargs()).check(["train"])
    message = str(err.value)
    assert "3 problems" in message
    assert f"{_file(fresh_flood, 'label', i=0)} (the label)" in message and "CRS EPSG:4326 vs EPSG:32630" in message
    assert f"{_file(fresh_flood, 'S1GRD', i=1)} (modality 'S1GRD')" in message
    assert "not on the same pixel grid" in message
    assert f"{_file(fresh_flood, 'label', i=2)} (the label) is 30x32" in message


def test_sub_pixel_float_noise_in_transforms_is_accepted(fresh_flood):
    """The real TerraMesh chips differ by 1e-10 m between modalities: that is the same grid."""
    _rewrite(_file(fresh_flood, "S1GRD"), lambda a, c, t: (a, c, Affine(t.a, t.b, t.c + 1e-9, t.d, t.e, t.f)))
    GenericMultiModalDataModule(**fresh_flood.datamodule_kwargs()).check(["train"])


@pytest.mark.parametrize("what", ["S2L1C", "label"])
def test_truncated_or_corrupt_files_are_named(fresh_flood, what):
    path = _file(fresh_flood, what, "train", 1)
    content = path.read_bytes()
    path.write_bytes(content[: len(content) // 2])
    with pytest.raises(DataError, match="cannot be read") as err:
        GenericMultiModalDataModule(**fresh_flood.datamodule_kwargs()).check(["train"])
    expected = "modality 'S2L1C'" if what == "S2L1C" else "modality 'label'"
    assert f"cannot read raster {path} ({expected})" in str(err.value)


def test_corrupt_file_read_at_train_time_names_it(fresh_flood):
    path = _file(fresh_flood, "S1GRD", "train", 0)
    path.write_bytes(b"not a tiff")
    dm = GenericMultiModalDataModule(**fresh_flood.datamodule_kwargs(check_files=False))
    with pytest.raises(DataError, match=f"cannot read raster {path} \\(modality 'S1GRD'\\)"):
        dm.make_dataset("train")[0]


def test_band_mismatch_without_check_files_is_caught_at_read(fresh_flood):
    _rewrite(_file(fresh_flood, "S2L1C"), lambda a, c, t: (a[:12], c, t))
    dm = GenericMultiModalDataModule(**fresh_flood.datamodule_kwargs(check_files=False))
    with pytest.raises(RasterMismatchError, match=r"\(modality 'S2L1C'\) has 12 bands, expected 13"):
        dm.make_dataset("train")[0]


def test_samples_of_different_sizes_need_a_crop(fresh_flood):
    for m in ("S2L1C", "S1GRD", "label"):
        _rewrite(_file(fresh_flood, m, i=2), lambda a, c, t: (a[:, :16, :16], c, t))
    with pytest.raises(RasterMismatchError, match="different sizes \\(16x16, 32x32\\).*add a crop or resize"):
        GenericMultiModalDataModule(**fresh_flood.datamodule_kwargs(batch_size=2)).check(["train"])
    dm = GenericMultiModalDataModule(**fresh_flood.datamodule_kwargs(batch_size=2, train_transform=[
        {"random_crop": 16}]))
    assert dm.check(["train"]).sizes["train"] == [(16, 16), (32, 32)]
    with pytest.raises(RasterMismatchError, match="predict never crops: use batch_size: 1"):
        dm.check(["predict"])


def test_random_crop_larger_than_rasters(fresh_flood):
    dm = GenericMultiModalDataModule(**fresh_flood.datamodule_kwargs(train_transform=[{"random_crop": 64}]))
    with pytest.raises(ConfigError, match="random_crop to 64x64 but the rasters are 32x32") as err:
        dm.check(["train"])
    assert err.value.key == "data.init_args.train_transform"


def test_batch_larger_than_train_split_with_drop_last(fresh_flood):
    dm = GenericMultiModalDataModule(**fresh_flood.datamodule_kwargs(batch_size=4))
    with pytest.raises(ConfigError, match="3 samples, fewer than batch_size=4") as err:
        dm.setup("fit")
    assert err.value.key == "data.init_args.batch_size"
    dm = GenericMultiModalDataModule(**fresh_flood.datamodule_kwargs(batch_size=4, drop_last=False))
    dm.setup("fit")
    assert next(iter(dm.train_dataloader()))["mask"].shape[0] == 3


def test_out_of_range_classification_target(tmp_path):
    from terramind_ft.data.synthetic import make_classification

    data = make_classification(tmp_path, num_classes=3, labels="files")
    (Path(data.label_root) / f"{data.prefixes['train'][0]}.txt").write_text("7\n")
    with pytest.raises(DataError, match=rf"sample '{data.prefixes['train'][0]}': class 7 outside"):
        GenericMultiModalDataModule(**data.datamodule_kwargs()).check(["train"])
    (Path(data.label_root) / f"{data.prefixes['train'][0]}.txt").write_text("seven\n")
    with pytest.raises(DataError, match=rf"{data.prefixes['train'][0]}.txt: class 'seven' is neither"):
        GenericMultiModalDataModule(**data.datamodule_kwargs()).check(["train"])


@pytest.mark.parametrize("override, key, message", [
    ({"image_grep": {"S2L1C": "*_S2Hand.tif"}}, "image_grep", r"no grep for modalities \['S1GRD'\]"),
    ({"output_bands": {"S2L1C": ["NIR"]}}, "output_bands.S2L1C",
     "output band 'NIR' of 'S2L1C' is not in dataset_bands"),
    ({"means": {"S2L1C": [0.0] * 12}, "stds": {"S2L1C": [1.0] * 12}}, "means.S2L1C", "12 values for 13 bands"),
    ({"means": {"S2L1C": [0.0] * 13}}, "stds.S2L1C", "give both means.S2L1C and stds.S2L1C"),
    ({"stds": {"S1GRD": [1.0, 0.0]}, "means": {"S1GRD": [0.0, 0.0]}}, "stds.S1GRD", "must be positive"),
    ({"modalities": ["S2L1C", "MYSAR"], "image_grep": "*", **{f"{s}_data_root": "/d" for s in
                                                               ("train", "val", "test", "predict")}},
     "means.MYSAR", "'MYSAR' is not a TerraMind modality"),
    ({"rgb_modality": "DEM"}, "rgb_modality", "rgb_modality 'DEM' is not one of"),
    ({"rgb_indices": [13, 2, 1]}, "rgb_indices", "out of range for S2L1C with 13 bands"),
    ({"modalities": ["S2L1C", "mask"]}, "modalities", "'mask' and 'label' are batch keys"),
    ({"task": "detection"}, "task", "task must be segmentation, classification or regression"),
    ({"num_classes": 3}, "class_names", "2 class_names for num_classes=3"),
    ({"batch_size": 0}, "batch_size", "batch_size must be >= 1"),
    ({"sample_num_modalities": 3}, "sample_num_modalities", r"must be in \[1, 2\]"),
    ({"train_transform": ["flip"]}, "train_transform[0]", "unknown transform 'flip'"),
])
def test_config_errors_carry_their_key(flood, override, key, message):
    with pytest.raises(ConfigError, match=message) as err:
        GenericMultiModalDataModule(**flood.datamodule_kwargs(**override))
    assert err.value.key == f"data.init_args.{key}"


def test_missing_labels_and_split_file(flood):
    dm = GenericMultiModalDataModule(**flood.datamodule_kwargs(val_label_data_root=None))
    with pytest.raises(ConfigError, match="needs labels for the val split") as err:
        dm.setup("fit")
    assert err.value.key == "data.init_args.val_label_data_root"
    dm = GenericMultiModalDataModule(**flood.datamodule_kwargs(test_split="/nonexistent/flood_test_data.txt"))
    with pytest.raises(DataNotFoundError, match="data.init_args.test_split: split file /nonexistent"):
        dm.setup("test")
    dm = GenericMultiModalDataModule(**flood.datamodule_kwargs(test_data_root=None))
    with pytest.raises(ConfigError, match="needs test data") as err:
        dm.setup("test")
    assert err.value.key == "data.init_args.test_data_root"


def _describe(path, descriptions):
    with rasterio.open(path) as src:
        array, crs, transform, nodata = src.read(), src.crs, src.transform, src.nodata
    write_raster(path, array, crs=crs, transform=transform, nodata=nodata, compress=None,
                 descriptions=list(descriptions))


S2L1C_IDS = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12"]


def test_band_descriptions_in_another_order_than_the_config_reads_are_named_with_the_fix(fresh_flood):
    """A file exported with B8A last (as some tools sort band names) has 13 bands like any L1C file: only its
    band descriptions say that bands 9 to 13 are not where the catalogue order puts them."""
    path = _file(fresh_flood, "S2L1C", "train", 1)
    exported = [b for b in S2L1C_IDS if b != "B8A"] + ["B8A"]
    with rasterio.open(path) as src:
        array = src.read()
    order = [S2L1C_IDS.index(b) for b in exported]
    _rewrite(path, lambda a, c, t: (a[order], c, t))
    _describe(path, exported)
    with pytest.raises(RasterMismatchError) as err:
        GenericMultiModalDataModule(**fresh_flood.datamodule_kwargs()).check(["train"])
    message = str(err.value)
    assert f"{path} (modality 'S2L1C') names its bands" in message
    assert "reads its band 9 as 'NIR_NARROW', which the file calls 'B09' (5 of 13 bands differ)" in message
    assert "data.init_args.dataset_bands.S2L1C to the file's order" in message

    # the fix it names: the model gets the catalogue order again, by name
    kwargs = fresh_flood.datamodule_kwargs(dataset_bands={"S2L1C": exported},
                                           output_bands={"S2L1C": S2L1C_IDS})
    dm = GenericMultiModalDataModule(**kwargs)
    dm.check(["train"])
    fixed = dm.make_dataset("train", raw=True)
    index = [r.prefix for r in fixed.records].index(fresh_flood.prefixes["train"][1])
    assert torch.equal(fixed[index]["image"]["S2L1C"], torch.from_numpy(array.astype("float32")))


def test_descriptions_that_name_no_band_or_agree_pass(fresh_flood):
    path = _file(fresh_flood, "S2L1C", "train", 0)
    _describe(path, ["bands"] * 13)  # as the TerraMesh chips have them
    GenericMultiModalDataModule(**fresh_flood.datamodule_kwargs()).check(["train"])
    _describe(path, S2L1C_IDS)
    GenericMultiModalDataModule(**fresh_flood.datamodule_kwargs()).check(["train"])
    s1 = _file(fresh_flood, "S1GRD", "train", 0)
    _describe(s1, ["VH", "VV"])  # swapped polarisations are caught for S1 as well
    with pytest.raises(RasterMismatchError, match=r"reads its band 1 as 'VV', which the file calls 'VH'"):
        GenericMultiModalDataModule(**fresh_flood.datamodule_kwargs()).check(["train"])
