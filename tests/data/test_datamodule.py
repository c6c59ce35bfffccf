"""GenericMultiModalDataModule on generated data: batch contract, both Sen1Floods11 layouts, nodata semantics,
band selection, statistics defaults, transforms per split, missing / sampled modalities, scalar tasks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from terramind_ft.data.datamodule import GenericMultiModalDataModule
from terramind_ft.data.raster import write_raster
from terramind_ft.data.synthetic import make_classification, make_sen1floods11
from terramind_ft.errors import ConfigError, DataError
from terramind_ft.modalities import MODALITIES


def _raw(path):
    with rasterio.open(path) as src:
        return src.read().astype(np.float32), src.nodatavals


def _assert_batch_contract(batch, batch_size, size, modalities=("S2L1C", "S1GRD"), bands=(13, 2)):
    assert set(batch) == {"image", "mask", "filename", "nodata", "nodata_pixels"}
    assert list(batch["image"]) == list(modalities)
    for m, c in zip(modalities, bands, strict=True):
        x = batch["image"][m]
        assert x.dtype == torch.float32 and x.shape == (batch_size, c, size, size)
        assert torch.isfinite(x).all()
        assert batch["nodata_pixels"][m].dtype == torch.int64 and batch["nodata_pixels"][m].shape == (batch_size,)
        assert len(batch["filename"][m]) == batch_size
    assert batch["mask"].dtype == torch.int64 and batch["mask"].shape == (batch_size, size, size)
    assert batch["nodata"].dtype == torch.bool and batch["nodata"].shape == (batch_size, size, size)
    assert len(batch["filename"]["mask"]) == batch_size


@pytest.mark.parametrize("layout", ["terramind", "original"])
def test_both_sen1floods11_layouts_from_config_alone(layout, flood, flood_original):
    data = flood if layout == "terramind" else flood_original
    dm = GenericMultiModalDataModule(**data.datamodule_kwargs(batch_size=2))
    report = dm.check()
    assert report.samples == {"train": 4, "val": 2, "test": 2, "predict": 8}
    assert report.sizes["train"] == [(64, 64)] and report.files_checked == 3 * 8 + 3 * 8 - 8
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    _assert_batch_contract(batch, 2, 64)
    # the csv rows name the S1 file: the prefix was derived, and every modality resolved to the same sample
    val = dm.datasets["val"]
    assert [r.prefix for r in val.records] == data.prefixes["val"]
    for r in val.records:
        assert Path(r.files["S2L1C"]).name == f"{r.prefix}_S2Hand.tif"
        assert Path(r.label_file).name == f"{r.prefix}_LabelHand.tif"
    assert len(dm.val_dataloader()) == 1
    dm.setup("test")
    assert len(dm.test_dataloader()) == 1
    assert (dm.num_classes, dm.class_names, dm.ignore_index, dm.modalities) == (
        2, ["Others", "Flood"], -1, ["S2L1C", "S1GRD"])


def test_standardisation_and_nodata_after_standardisation(tmp_path):
    data = make_sen1floods11(tmp_path, size=32, splits={"train": 2}, s2_nodata=0, compress=None)
    dm = GenericMultiModalDataModule(**data.datamodule_kwargs(batch_size=1, no_data_replace=0.0))
    sample = dm.make_dataset("train")[0]
    record = dm.records("train")[0]
    s2_raw, s2_nodata = _raw(record.files["S2L1C"])
    s1_raw, _ = _raw(record.files["S1GRD"])
    assert s2_nodata[0] == 0 and (s2_raw == 0).any() and np.isnan(s1_raw).any()
    for m, raw, invalid in (("S2L1C", s2_raw, s2_raw == 0), ("S1GRD", s1_raw, np.isnan(s1_raw))):
        mean = np.asarray(MODALITIES[m].mean, np.float32)[:, None, None]  # defaults: the catalogue statistics
        std = np.asarray(MODALITIES[m].std, np.float32)[:, None, None]
        expected = np.where(invalid, 0.0, (raw - mean) / std)
        np.testing.assert_allclose(sample["image"][m].numpy(), expected, rtol=1e-5, atol=1e-5)
        assert int(sample["nodata_pixels"][m]) == int(invalid.any(0).sum()) > 0
    expected_nodata = (s2_raw == 0).any(0) | np.isnan(s1_raw).any(0)
    np.testing.assert_array_equal(sample["nodata"].numpy(), expected_nodata)
    # a different fill value lands exactly on the nodata pixels, in standardised units
    dm5 = GenericMultiModalDataModule(**data.datamodule_kwargs(batch_size=1, no_data_replace=-5.0))
    s1 = dm5.make_dataset("train")[0]["image"]["S1GRD"].numpy()
    np.testing.assert_array_equal(s1 == -5.0, np.isnan(s1_raw))


def test_label_nodata_nan_and_declared_become_ignore_index(tmp_path):
    data = make_sen1floods11(tmp_path, size=16, splits={"train": 2}, compress=None)
    record_prefix = data.prefixes["train"][0]
    label_path = Path(data.label_root) / f"{record_prefix}_LabelHand.tif"
    with rasterio.open(label_path) as src:
        crs, transform = src.crs, src.transform
    label = np.zeros((16, 16), np.int16)
    label[0, :4] = 255  # declared nodata
    label[2, :] = 1
    write_raster(label_path, label, crs=crs, transform=transform, nodata=255, compress=None)
    dm = GenericMultiModalDataModule(**data.datamodule_kwargs(no_label_replace=-100, num_classes=2))
    mask = dm.make_dataset("train")[0]["mask"]
    assert mask.dtype == torch.int64 and dm.ignore_index == -100
    assert (mask[0, :4] == -100).all() and (mask[0, 4:] == 0).all() and (mask[2] == 1).all()
    # a value that is neither a class nor the ignore index is an error naming the label file
    label[1, :3] = -1
    write_raster(label_path, label, crs=crs, transform=transform, nodata=255, compress=None)
    with pytest.raises(DataError, match=rf"label {label_path} holds class values \[-1\] outside \[0, 1\]"):
        dm.make_dataset("train")[0]
    # float labels: NaN -> ignore index
    float_label = label.astype(np.float32)
    float_label[0, :4] = np.nan
    float_label[1, :3] = 0
    write_raster(label_path, float_label, crs=crs, transform=transform, compress=None)
    dm = GenericMultiModalDataModule(**data.datamodule_kwargs(no_label_replace=-1))
    mask = dm.make_dataset("train")[0]["mask"]
    assert (mask[0, :4] == -1).all() and (mask[2] == 1).all() and mask.dtype == torch.int64


def test_nodata_to_ignore_and_reduce_zero_label(tmp_path):
    data = make_sen1floods11(tmp_path, size=32, splits={"train": 2}, nan_fraction=0.1, compress=None)
    plain = GenericMultiModalDataModule(**data.datamodule_kwargs()).make_dataset("train")[0]
    merged = GenericMultiModalDataModule(**data.datamodule_kwargs(nodata_to_ignore=True)).make_dataset("train")[0]
    assert plain["nodata"].any()
    assert (merged["mask"][plain["nodata"]] == -1).all()
    assert torch.equal(merged["mask"][~plain["nodata"]], plain["mask"][~plain["nodata"]])
    reduced = GenericMultiModalDataModule(**data.datamodule_kwargs(reduce_zero_label=True, num_classes=1,
                                                                   class_names=None)).make_dataset("train")[0]
    assert torch.equal(reduced["mask"] == -1, (plain["mask"] == -1) | (plain["mask"] == 0))
    assert set(reduced["mask"].unique().tolist()) <= {-1, 0}


def test_band_selection_by_name_and_statistics_follow(flood):
    dm = GenericMultiModalDataModule(**flood.datamodule_kwargs(
        output_bands={"S2L1C": ["B04", "GREEN", "BLUE"], "S1GRD": ["VH"]}, rgb_indices=None))
    assert dm.bands == {"S2L1C": ["B04", "GREEN", "BLUE"], "S1GRD": ["VH"]}
    s2 = MODALITIES["S2L1C"]
    assert dm.means["S2L1C"] == [s2.mean[3], s2.mean[2], s2.mean[1]]
    assert dm.stds["S1GRD"] == [MODALITIES["S1GRD"].std[1]]
    assert dm.rgb_indices == [0, 1, 2]  # found by band name
    sample = dm.make_dataset("train")[0]
    record = dm.records("train")[0]
    raw, _ = _raw(record.files["S2L1C"])
    expected = (raw[[3, 2, 1]] - np.array(dm.means["S2L1C"], np.float32)[:, None, None]) / np.array(
        dm.stds["S2L1C"], np.float32)[:, None, None]
    np.testing.assert_allclose(sample["image"]["S2L1C"].numpy(), expected, rtol=1e-5)
    assert sample["image"]["S1GRD"].shape[0] == 1


def test_user_means_per_dataset_band_are_selected_and_extra_keys_ignored(flood):
    means = {"S2L1C": [float(i) for i in range(13)], "S1GRD": [0.0, 1.0], "DEM": [5.0], "S2L2A": [0.0] * 12}
    stds = {"S2L1C": [1.0] * 13, "S1GRD": [1.0, 2.0], "DEM": [1.0], "S2L2A": [1.0] * 12}
    dm = GenericMultiModalDataModule(**flood.datamodule_kwargs(
        means=means, stds=stds, output_bands={"S2L1C": ["SWIR_2", "RED"]}, rgb_indices=None))
    assert dm.rgb_indices == [0]  # no RGB among the output bands: greyscale plots
    assert dm.means == {"S2L1C": [12.0, 3.0], "S1GRD": [0.0, 1.0]}
    sample = dm.make_dataset("train")[0]
    raw, _ = _raw(dm.records("train")[0].files["S2L1C"])
    np.testing.assert_allclose(sample["image"]["S2L1C"][0].numpy(), raw[12] - 12.0)


def test_dataset_bands_describe_files_with_other_band_order(tmp_path):
    """A 3-band file holding B02, B03, B04 (blue first) read as S2L1C RED, GREEN, BLUE."""
    data = make_sen1floods11(tmp_path, size=16, splits={"train": 1}, compress=None)
    path = Path(data.data_roots["S2L1C"]) / f"{data.prefixes['train'][0]}_S2Hand.tif"
    with rasterio.open(path) as src:
        full, crs, transform = src.read(), src.crs, src.transform
    write_raster(path, full[[1, 2, 3]], crs=crs, transform=transform, compress=None)
    dm = GenericMultiModalDataModule(**data.datamodule_kwargs(
        dataset_bands={"S2L1C": ["B02", "B03", "B04"]}, output_bands={"S2L1C": ["RED", "GREEN", "BLUE"]},
        batch_size=1))
    dm.check()
    s2 = dm.make_dataset("train")[0]["image"]["S2L1C"]
    red = (full[3].astype(np.float32) - MODALITIES["S2L1C"].mean[3]) / MODALITIES["S2L1C"].std[3]
    np.testing.assert_allclose(s2[0].numpy(), red, rtol=1e-5)


def test_train_augmentation_is_joint_and_predict_keeps_the_grid(flood):
    dm = GenericMultiModalDataModule(**flood.datamodule_kwargs(
        train_transform=["d4", {"random_crop": 48}], val_transform=[{"center_crop": 32}],
        test_transform=[{"resize": 32}], batch_size=2))
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    _assert_batch_contract(batch, 2, 48)
    # S1 nodata pixels (standardised value 0 where the file had NaN) moved with the image
    assert torch.equal(batch["nodata"], (batch["image"]["S1GRD"] == 0).any(1) | batch["nodata"])
    _assert_batch_contract(next(iter(dm.val_dataloader())), 2, 32)
    dm.setup("test")
    _assert_batch_contract(next(iter(dm.test_dataloader())), 2, 32)
    dm.setup("predict")
    batch = next(iter(dm.predict_dataloader()))
    assert set(batch) == {"image", "filename", "nodata", "nodata_pixels"}
    assert batch["image"]["S2L1C"].shape == (2, 13, 64, 64)  # no crop, no resize at predict
    assert set(batch["filename"]) == {"S2L1C", "S1GRD"}


def test_same_pixels_in_every_modality_after_augmentation(tmp_path):
    """Identical content in S2 band 0 and S1 band 0 stays identical after d4 + crop: one draw for both."""
    data = make_sen1floods11(tmp_path, size=32, splits={"train": 2}, nan_fraction=0.0, compress=None)
    for prefix in data.prefixes["train"]:
        pattern = np.arange(32 * 32, dtype=np.float32).reshape(32, 32)
        for m, suffix in (("S2L1C", "_S2Hand.tif"), ("S1GRD", "_S1Hand.tif")):
            path = Path(data.data_roots[m]) / f"{prefix}{suffix}"
            with rasterio.open(path) as src:
                arr, crs, transform, dtype = src.read(), src.crs, src.transform, src.dtypes[0]
            arr[0] = pattern.astype(dtype)
            write_raster(path, arr, crs=crs, transform=transform, compress=None)
    means = {"S2L1C": [0.0] * 13, "S1GRD": [0.0, 0.0]}
    stds = {"S2L1C": [1.0] * 13, "S1GRD": [1.0, 1.0]}
    dm = GenericMultiModalDataModule(**data.datamodule_kwargs(means=means, stds=stds, batch_size=2,
                                                              train_transform=["d4", {"random_crop": 20}]))
    dm.setup("fit")
    for _ in range(3):
        batch = next(iter(dm.train_dataloader()))
        assert torch.equal(batch["image"]["S2L1C"][:, 0], batch["image"]["S1GRD"][:, 0])


def test_workers_give_the_same_batches(flood):
    kwargs = flood.datamodule_kwargs(batch_size=2)
    serial = GenericMultiModalDataModule(**kwargs)
    parallel = GenericMultiModalDataModule(**{**kwargs, "num_workers": 2, "persistent_workers": True})
    for dm in (serial, parallel):
        dm.setup("validate")
    for a, b in zip(serial.val_dataloader(), parallel.val_dataloader(), strict=True):
        assert torch.equal(a["image"]["S2L1C"], b["image"]["S2L1C"]) and torch.equal(a["mask"], b["mask"])


def test_allow_missing_modalities_groups_batches(tmp_path):
    data = make_sen1floods11(tmp_path, size=16, splits={"train": 3, "val": 2}, compress=None)
    missing = data.prefixes["train"][1]
    (Path(data.data_roots["S1GRD"]) / f"{missing}_S1Hand.tif").unlink()
    with pytest.raises(Exception, match=f"sample '{missing}', modality 'S1GRD'"):
        GenericMultiModalDataModule(**data.datamodule_kwargs()).check(["train"])
    dm = GenericMultiModalDataModule(**data.datamodule_kwargs(allow_missing_modalities=True, batch_size=2,
                                                              drop_last=False))
    dm.setup("fit")
    loader = dm.train_dataloader()
    batches = list(loader)
    assert len(loader) == len(batches) == 2
    keys = sorted(tuple(b["image"]) for b in batches)
    assert keys == [("S2L1C",), ("S2L1C", "S1GRD")]
    partial = next(b for b in batches if tuple(b["image"]) == ("S2L1C",))
    assert partial["filename"]["S2L1C"] == [str(Path(data.data_roots["S2L1C"]) / f"{missing}_S2Hand.tif")]
    assert partial["image"]["S2L1C"].shape[0] == 1  # the batch is smaller, never re-sized silently


def test_sample_num_modalities_draws_per_batch(flood):
    dm = GenericMultiModalDataModule(**flood.datamodule_kwargs(sample_num_modalities=1, batch_size=2))
    dm.setup("fit")
    seen = set()
    for _ in range(6):
        for batch in dm.train_dataloader():
            assert len(batch["image"]) == 1
            assert batch["nodata"].shape == (2, 64, 64) and len(batch["filename"][next(iter(batch["image"]))]) == 2
            seen.add(next(iter(batch["image"])))
    assert seen == {"S2L1C", "S1GRD"}
    assert set(next(iter(dm.val_dataloader()))["image"]) == {"S2L1C", "S1GRD"}  # evaluation sees everything


@pytest.mark.parametrize("labels", ["csv", "files"])
def test_classification_labels_from_csv_or_files(tmp_path, labels):
    data = make_classification(tmp_path, labels=labels, num_classes=3, class_names=["forest", "water", "urban"])
    dm = GenericMultiModalDataModule(**data.datamodule_kwargs(batch_size=3))
    assert dm.check().samples["train"] == 6
    dm.setup("fit")
    batch = next(iter(dm.val_dataloader()))
    assert set(batch) == {"image", "label", "filename", "nodata", "nodata_pixels"}
    assert batch["label"].dtype == torch.int64 and batch["label"].shape == (3,)
    assert batch["image"]["S2L2A"].shape == (3, 12, 32, 32) and batch["image"]["S1RTC"].shape == (3, 2, 32, 32)
    prefixes = [Path(f).stem for f in batch["filename"]["S2L2A"]]
    assert batch["label"].tolist() == [data.labels[p] for p in prefixes]
    assert len(batch["filename"]["label"]) == 3


def test_regression_float_masks_and_scalar_targets(tmp_path):
    data = make_sen1floods11(tmp_path, size=16, splits={"train": 2}, compress=None)
    for p in data.prefixes["train"]:
        path = Path(data.label_root) / f"{p}_LabelHand.tif"
        with rasterio.open(path) as src:
            crs, transform = src.crs, src.transform
        target = np.full((16, 16), 2.5, np.float32)
        target[0, 0] = np.nan
        write_raster(path, target, crs=crs, transform=transform, compress=None)
    dm = GenericMultiModalDataModule(**data.datamodule_kwargs(task="regression", no_label_replace=-1,
                                                              num_classes=None, class_names=None))
    sample = dm.make_dataset("train")[0]
    assert sample["mask"].dtype == torch.float32 and sample["mask"][0, 0] == -1 and sample["mask"][1, 1] == 2.5
    table = tmp_path / "targets.csv"
    table.write_text("".join(f"{p},{i + 0.5}\n" for i, p in enumerate(data.prefixes["train"])))
    dm = GenericMultiModalDataModule(**data.datamodule_kwargs(task="regression", train_label_data_root=str(table),
                                                              num_classes=None, class_names=None))
    assert [float(dm.make_dataset("train")[i]["label"]) for i in range(2)] == [0.5, 1.5]


def test_one_shared_root_with_greps_and_no_split_files(tmp_path, flood):
    """All modalities and labels in one folder; discovery from the first modality's files."""
    import shutil

    folder = tmp_path / "all"
    folder.mkdir()
    for root in list(flood.data_roots.values()) + [flood.label_root]:
        for f in Path(root).iterdir():
            shutil.copy(f, folder / f.name)
    kwargs = flood.datamodule_kwargs(train_data_root=str(folder), train_label_data_root=str(folder),
                                     train_split=None)
    dm = GenericMultiModalDataModule(**kwargs)
    records = dm.records("train")
    assert len(records) == 8 and sorted(r.prefix for r in records) == sorted(sum(flood.prefixes.values(), []))
    assert all(Path(r.files["S1GRD"]).name.endswith("_S1Hand.tif") for r in records)


def test_val_reading_train_folders_without_splits_warns(flood):
    from terramind_ft.data.files import DataNotice

    kwargs = flood.datamodule_kwargs(train_split=None, val_split=None)
    with pytest.warns(DataNotice, match="evaluated on its training data"):
        GenericMultiModalDataModule(**kwargs).records("val")


def test_predict_split_and_exact_file_names(flood):
    dm = GenericMultiModalDataModule(**flood.datamodule_kwargs(predict_split=flood.splits["test"],
                                                               allow_substring_file_names=False, batch_size=1))
    dm.setup("predict")
    names = [Path(b["filename"]["S1GRD"][0]).name for b in dm.predict_dataloader()]
    assert names == [f"{p}_S1Hand.tif" for p in flood.prefixes["test"]]


def test_predict_files_with_other_bands_feed_the_models_bands(tmp_path):
    """Chips hold B02, B03, B04; new scenes hold all 13 S2L1C bands (predict_dataset_bands). Predict takes the
    model's three bands from them by name, standardised as in training, in memory and when streamed."""
    data = make_sen1floods11(tmp_path / "chips", size=16, splits={"train": 1, "predict": 1}, compress=None)
    chip = Path(data.data_roots["S2L1C"]) / f"{data.prefixes['train'][0]}_S2Hand.tif"
    scene = Path(data.data_roots["S2L1C"]) / f"{data.prefixes['predict'][0]}_S2Hand.tif"
    with rasterio.open(chip) as src:
        write_raster(chip, src.read()[[1, 2, 3]], crs=src.crs, transform=src.transform, compress=None)
    with rasterio.open(scene) as src:
        full = src.read().astype(np.float32)
    all_bands = list(MODALITIES["S2L1C"].bands)
    kwargs = data.datamodule_kwargs(dataset_bands={"S2L1C": ["B02", "B03", "B04"]}, batch_size=1,
                                    predict_dataset_bands={"S2L1C": all_bands},
                                    predict_output_bands={"S2L1C": ["BLUE", "GREEN", "RED"]})
    kwargs["predict_data_root"] = data.data_roots
    kwargs["predict_split"] = data.splits["predict"]
    dm = GenericMultiModalDataModule(**kwargs)
    dm.check(["train", "predict"])
    expected = (full[[1, 2, 3]] - np.float32(MODALITIES["S2L1C"].mean[1:4])[:, None, None]) / \
        np.float32(MODALITIES["S2L1C"].std[1:4])[:, None, None]
    np.testing.assert_allclose(dm.make_dataset("predict")[0]["image"]["S2L1C"].numpy(), expected, rtol=1e-5)
    assert dm.make_dataset("train")[0]["image"]["S2L1C"].shape[0] == 3

    from terramind_ft.inference.scene import scene_dataloader

    (batch,) = list(scene_dataloader(dm))
    assert batch["scene"][0]["band_indexes"]["S2L1C"] == [2, 3, 4]

    with pytest.raises(ConfigError, match=r"must be the model's bands, output_bands.S2L1C \['B02', 'B03', 'B04'\]"):
        GenericMultiModalDataModule(**{**kwargs, "predict_output_bands": {"S2L1C": ["RED", "GREEN", "BLUE"]}})
    with pytest.raises(ConfigError, match="lacks the model's bands") as err:
        GenericMultiModalDataModule(**{**kwargs, "predict_output_bands": None,
                                       "predict_dataset_bands": {"S2L1C": ["B01", "B02", "B03"]}})
    assert err.value.key == "data.init_args.predict_dataset_bands.S2L1C"
