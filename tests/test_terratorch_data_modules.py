"""TerraTorch's data-module keys: accepted with the same meaning, mapped, or refused by name with the reason; its
single-modality GenericNonGeoSegmentationDataModule (the official burn-scars config) runs on ours."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
import yaml
from rasterio.transform import from_origin

from cli_configs import FAST_TRAINER, sen1floods11_config, write
from terramind_ft.cli import main
from terramind_ft.cli.terratorch import translate_terratorch
from terramind_ft.data import GenericMultiModalDataModule
from terramind_ft.errors import ConfigError

HLS_BANDS = ["BLUE", "GREEN", "RED", "NIR_NARROW", "SWIR_1", "SWIR_2"]
# The data and model sections of IBM's terramind_v1_base_burnscars.yaml (TerraTorch), on the tiny model.
BURNSCARS = """
seed_everything: 0
trainer:
  accelerator: cpu
  precision: 32-true
  max_epochs: 1
  limit_train_batches: 2
  limit_val_batches: 1
  limit_test_batches: 1
  enable_progress_bar: false
  default_root_dir: {root}/run
data:
  class_path: terratorch.datamodules.GenericNonGeoSegmentationDataModule
  init_args:
    batch_size: 2
    num_workers: 0
    dataset_bands: [BLUE, GREEN, RED, NIR_NARROW, SWIR_1, SWIR_2]
    rgb_indices: [2, 1, 0]
    train_data_root: {data}
    val_data_root: {data}
    test_data_root: {data}
    train_split: {data}/train.txt
    val_split: {data}/val.txt
    test_split: {data}/test.txt
    img_grep: "*_merged.tif"
    label_grep: "*.mask.tif"
    means: [0.0333, 0.0570, 0.0589, 0.2323, 0.1973, 0.1194]
    stds: [0.0227, 0.0268, 0.0400, 0.0779, 0.0871, 0.0724]
    no_data_replace: 0
    no_label_replace: -1
    num_classes: 2
    train_transform:
      - class_path: albumentations.D4
      - class_path: ToTensorV2
model:
  class_path: terratorch.tasks.SemanticSegmentationTask
  init_args:
    model_factory: EncoderDecoderFactory
    model_args:
      backbone: terramind_v1_tiny
      backbone_pretrained: false
      backbone_modalities: [S2L2A]
      backbone_bands: {{S2L2A: [BLUE, GREEN, RED, NIR_NARROW, SWIR_1, SWIR_2]}}
      necks:
        - name: SelectIndices
          indices: [2, 5, 8, 11]
        - name: ReshapeTokensToImage
          remove_cls_token: false
        - name: LearnedInterpolateToPyramidal
      decoder: UNetDecoder
      decoder_channels: [32, 16, 16, 8]
      head_dropout: 0.1
      num_classes: 2
    loss: dice
    ignore_index: -1
    freeze_backbone: true
    class_names: [Others, Burned]
"""


def _burn_scars(folder, n=8, size=64):
    """HLS-like chips: 6-band reflectance ``<id>_merged.tif`` and ``<id>.mask.tif`` side by side."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    ids = [f"subsetted_512x512_HLS.S30.T10SEH.2020{i:03d}" for i in range(n)]
    for i, sample in enumerate(ids):
        profile = {"driver": "GTiff", "width": size, "height": size, "crs": "EPSG:32610",
                   "transform": from_origin(500000 + 1000 * i, 4200000, 30, 30)}
        with rasterio.open(folder / f"{sample}_merged.tif", "w", count=6, dtype="float32", **profile) as dst:
            dst.write(rng.uniform(0.0, 0.4, (6, size, size)).astype("float32"))
        mask = (rng.random((size, size)) > 0.7).astype("int16")
        mask[:4] = -1
        with rasterio.open(folder / f"{sample}.mask.tif", "w", count=1, dtype="int16", nodata=-1, **profile) as dst:
            dst.write(mask[None])
    for name, part in (("train", ids[:4]), ("val", ids[4:6]), ("test", ids[6:])):
        (folder / f"{name}.txt").write_text("\n".join(part) + "\n")
    return folder


def test_official_burn_scars_config_checks_fits_and_tests(tmp_path):
    data = _burn_scars(tmp_path / "hls_burn_scars")
    cfg = tmp_path / "terramind_v1_base_burnscars.yaml"
    cfg.write_text(BURNSCARS.format(root=tmp_path, data=data))
    assert main(["check", "--config", str(cfg)]) == 0
    assert main(["fit", "--config", str(cfg)]) == 0
    assert main(["test", "--config", str(cfg), "--ckpt_path", "best"]) == 0
    assert (tmp_path / "run" / "checkpoints" / "metrics.json").is_file()


def test_nongeo_mapping_names_the_modality_after_the_backbone(tmp_path):
    config = yaml.safe_load(BURNSCARS.format(root=tmp_path, data=tmp_path / "d"))
    translated, notices = translate_terratorch(config)
    init = translated["data"]["init_args"]
    assert translated["data"]["class_path"].endswith("GenericMultiModalDataModule")
    assert init["modalities"] == ["S2L2A"] and init["image_grep"] == "*_merged.tif"
    assert init["dataset_bands"] == {"S2L2A": HLS_BANDS} and init["means"]["S2L2A"][0] == 0.0333
    assert init["train_label_data_root"] == init["train_data_root"]  # labels beside the images
    config["model"]["init_args"]["model_args"]["backbone_modalities"] = ["S2L2A", "S1GRD"]
    with pytest.raises(ConfigError, match="holds one modality"):
        translate_terratorch(config)


@pytest.mark.parametrize(("key", "value", "words"), [
    ("concat_bands", True, "TerraMind takes each modality by name"),
    ("shared_transforms", False, "misalign"),
    ("channel_position", -1, "bands first"),
    ("image_modalities", ["S2L1C"], "non-image modalities"),
])
def test_terratorch_keys_with_another_meaning_are_refused_by_name(tmp_path, key, value, words):
    config = sen1floods11_config(tmp_path)
    config["data"]["init_args"][key] = value
    with pytest.raises(ConfigError) as err:
        translate_terratorch(config)
    assert f"data.init_args.{key}" in str(err.value) and words in str(err.value)


def test_terratorch_keys_at_our_meaning_are_accepted(tmp_path):
    config = sen1floods11_config(tmp_path)
    init = config["data"]["init_args"]
    init.update(concat_bands=False, shared_transforms=True, check_stackability=False, skip_file_checks=False,
                channel_position=-3, rgb_indices={"S2L1C": [3, 2, 1]}, image_modalities=["S2L1C", "S1GRD"],
                expand_temporal_dimension=False)
    translated, notices = translate_terratorch(config)
    new = translated["data"]["init_args"]
    assert new["rgb_modality"] == "S2L1C" and new["rgb_indices"] == [3, 2, 1] and new["check_files"] is True
    assert not {"concat_bands", "shared_transforms", "check_stackability", "channel_position",
                "expand_temporal_dimension"} & set(new)
    assert any("concat_bands" in n for n in notices)
    GenericMultiModalDataModule(**new)  # and ours takes the rest


def test_data_root_and_label_data_root_are_the_fallback_of_every_split(tmp_path):
    config = sen1floods11_config(tmp_path)
    init = config["data"]["init_args"]
    init["data_root"] = init.pop("train_data_root")
    init["label_data_root"] = init.pop("train_label_data_root")
    for split in ("val", "test"):
        init.pop(f"{split}_data_root"), init.pop(f"{split}_label_data_root")
    dm = GenericMultiModalDataModule(**init)
    assert {len(dm.records(s)) for s in ("train", "val", "test")} == {4, 2}
    assert dm.roots["train"] == dm.roots["test"]


def test_constant_scale_multiplies_the_values_before_standardisation(tmp_path):
    config = sen1floods11_config(tmp_path)
    init = config["data"]["init_args"]
    plain = GenericMultiModalDataModule(**init)
    scaled = GenericMultiModalDataModule(**init, constant_scale={"S1GRD": 2.0},
                                         means={"S1GRD": [-24.0, -40.0]}, stds={"S1GRD": [10.0, 12.0]})
    raw = plain.make_dataset("train", raw=True)[0]["image"]["S1GRD"].numpy()
    got = scaled.make_dataset("train")[0]["image"]["S1GRD"].numpy()
    expected = (raw * 2.0 - np.array([-24.0, -40.0])[:, None, None]) / np.array([10.0, 12.0])[:, None, None]
    valid = np.isfinite(expected)
    np.testing.assert_allclose(got[valid], expected[valid], rtol=1e-5, atol=1e-5)


def test_integer_band_placeholders_in_dataset_bands(tmp_path):
    config = sen1floods11_config(tmp_path)
    init = config["data"]["init_args"]
    init["dataset_bands"] = {"S1GRD": ["VV", 7]}
    init["output_bands"] = {"S1GRD": ["VV"]}
    dm = GenericMultiModalDataModule(**init)
    assert dm.specs["S1GRD"].band_indices == (0,)
    init["output_bands"] = {"S1GRD": ["VV", 7]}
    with pytest.raises(ConfigError, match="pretraining statistics"):
        GenericMultiModalDataModule(**init)  # a band without a name has no catalogue statistics


def test_integer_placeholders_through_the_cli_parser(tmp_path):
    config = sen1floods11_config(tmp_path)
    config["data"]["init_args"]["dataset_bands"] = {"S1GRD": ["VV", 7]}
    config["data"]["init_args"]["output_bands"] = {"S1GRD": ["VV"]}
    config["model"]["init_args"]["model_args"]["backbone_bands"] = {"S1GRD": ["VV"]}
    config["trainer"] = {**FAST_TRAINER, "default_root_dir": str(tmp_path / "run")}
    assert main(["fit", "--config", write(config, tmp_path / "placeholders.yaml")]) == 0


# A generic bands-as-time config (GenericNonGeoSegmentationDataModule): one 18-band file per chip (3 dates x 6 HLS
# bands), expand_temporal_dimension, and the temporal backbone keys; plus the one key it needs here.
MULTITEMPORAL = BURNSCARS.replace("img_grep", "expand_temporal_dimension: true\n    time_layout: time_major\n"
                                  "    img_grep").replace(
    "      backbone_bands: {{S2L2A: [BLUE, GREEN, RED, NIR_NARROW, SWIR_1, SWIR_2]}}",
    "      backbone_bands: {{S2L2A: [BLUE, GREEN, RED, NIR_NARROW, SWIR_1, SWIR_2]}}\n"
    "      backbone_use_temporal: true\n      backbone_temporal_pooling: concat\n"
    "      backbone_temporal_n_timestamps: 3").replace("decoder_channels: [32, 16, 16, 8]",
                                                        "decoder_channels: [32, 16, 16, 8]\n      rescale: true")


def test_a_bands_as_time_config_runs_with_its_band_order_said(tmp_path):
    from terramind_ft.data.synthetic import make_time_series

    data = make_time_series(tmp_path / "multi_temporal_crop", n=8, dates=3, bands=6, size=64)
    text = MULTITEMPORAL.format(root=tmp_path, data=data).replace("means: [0.0333, 0.0570, 0.0589, 0.2323, 0.1973, "
                                                                  "0.1194]", "means: [2000, 2010, 2020, 2030, 2040, 2050]"
                                                                  ).replace("stds: [0.0227, 0.0268, 0.0400, 0.0779, "
                                                                            "0.0871, 0.0724]", "stds: [800, 800, 800, "
                                                                                               "800, 800, 800]")
    cfg = tmp_path / "bands_as_time.yaml"
    cfg.write_text(text)
    translated, notices = translate_terratorch(yaml.safe_load(text))
    init = translated["data"]["init_args"]
    assert init["time_steps"] == {"S2L2A": 3} and init["time_layout"] == "time_major"
    assert any("expand_temporal_dimension: true -> time_steps" in n for n in notices)
    assert main(["check", "--config", str(cfg)]) == 0
    assert main(["fit", "--config", str(cfg)]) == 0
    # without the band order the config is refused, saying what to add
    raw = yaml.safe_load(text)
    raw["data"]["init_args"].pop("time_layout")
    with pytest.raises(ConfigError, match="add data.init_args.time_layout: time_major"):
        translate_terratorch(raw)


OFFICIAL_CROP = Path(__file__).resolve().parent.parent / "configs" / "terratorch" / \
    "terramind_v1_base_multitemporal_crop.yaml"
# what the test changes: the data folder (as a user would, on the command line), the model size, the run length
CROP_OVERRIDES = ["--data.init_args.batch_size=2", "--data.init_args.num_workers=0",
                  "--model.init_args.model_args.backbone=terramind_v1_tiny",
                  "--model.init_args.model_args.backbone_pretrained=false",
                  "--model.init_args.model_args.decoder_channels=[32, 16, 16, 8]",
                  *(f"--trainer.{k}={v}" for k, v in FAST_TRAINER.items())]


def test_official_multitemporal_crop_config_runs_unchanged_on_its_dataset_layout(tmp_path):
    """IBM's terramind_v1_base_multitemporal_crop.yaml names TerraTorch's MultiTemporalCropClassificationDataModule:
    it fits, tests (on the validation chips, as TerraTorch does) and predicts with the data folder given on the
    command line, and reads each file's 18 bands as 3 dates of the 6 HLS bands, date after date."""
    from terramind_ft.data.synthetic import make_multi_temporal_crop

    data = make_multi_temporal_crop(tmp_path / "multi-temporal-crop", n_train=4, n_val=2)
    run = tmp_path / "run"
    common = ["--config", str(OFFICIAL_CROP), "--data.init_args.data_root", str(data), *CROP_OVERRIDES,
              f"--trainer.default_root_dir={run}"]
    assert main(["fit", *common]) == 0
    saved = yaml.safe_load((run / "config.yaml").read_text())["data"]["init_args"]
    assert saved["train_data_root"] == str(data / "training_chips")
    assert saved["test_data_root"] == saved["val_data_root"] == str(data / "validation_chips")
    assert saved["time_steps"] == {"S2L2A": 3} and saved["time_layout"] == "time_major"
    assert saved["reduce_zero_label"] and saved["num_classes"] == 13

    dm = GenericMultiModalDataModule(**{**saved, "train_transform": None})
    dm.setup("fit")
    sample = dm.datasets["val"][0]
    image = sample["image"]["S2L2A"]
    assert image.shape == (6, 3, 64, 64)
    means = torch.tensor(saved["means"]["S2L2A"])
    stds = torch.tensor(saved["stds"]["S2L2A"])
    file_units = image.mean(dim=(-2, -1)) * stds[:, None] + means[:, None]  # [band, date]
    expected = torch.tensor([[1000.0 * (t + 1) + 100 * b + 24.5 for t in range(3)] for b in range(6)])
    torch.testing.assert_close(file_units, expected, atol=3.0, rtol=0)
    assert sample["mask"].min() == -1 and sample["mask"].max() <= 12  # 1..13 -> 0..12, 0 (no data) -> ignored

    assert main(["test", *common, "--ckpt_path", "best"]) == 0
    assert (run / "checkpoints" / "metrics.json").is_file()
    assert main(["predict", *common, "--ckpt_path", "best"]) == 0
    assert len(list((run / "predictions").glob("*.tif"))) == 2


def test_a_terratorch_data_key_typed_on_the_command_line_is_translated_not_lost(tmp_path):
    """GenericNonGeoSegmentationDataModule's train_data_root also places the labels (beside the images). Typed on
    the command line it must move both: before, the override set only the images' folder after translation, and the
    labels were read from the file's folder."""
    data = _burn_scars(tmp_path / "hls_burn_scars")
    cfg = tmp_path / "burnscars.yaml"
    cfg.write_text(BURNSCARS.format(root=tmp_path, data=tmp_path / "not_here"))
    overrides = [f"--data.init_args.{split}_{what}={data if what == 'data_root' else data / (split + '.txt')}"
                 for split in ("train", "val", "test") for what in ("data_root", "split")]
    assert main(["fit", "--config", str(cfg), *overrides]) == 0
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["data"]["init_args"]
    assert saved["train_label_data_root"] == str(data)


def test_terratorch_temporal_reshapes_are_skipped_with_a_notice_and_their_arguments_checked():
    from terramind_ft.data.transforms import TransformNotice, build_transform

    with pytest.warns(TransformNotice, match="FlattenTemporalIntoChannels is not needed"):
        compose = build_transform([{"class_path": "terratorch.datasets.transforms.FlattenTemporalIntoChannels"},
                                   {"class_path": "terratorch.datasets.transforms.UnflattenTemporalFromChannels",
                                    "init_args": {"n_timesteps": 3}}], key="data.init_args.train_transform")
    assert len(compose) == 0
    with pytest.raises(ConfigError, match="does not take"):
        build_transform([{"class_path": "terratorch.datasets.transforms.UnflattenTemporalFromChannels",
                          "init_args": {"n_steps": 3}}], key="data.init_args.train_transform")


@pytest.mark.parametrize(("key", "value", "words"), [
    ("use_metadata", True, "use_metadata: false"),
    ("expand_temporal_dimension", False, "first date"),
    ("bands", ["RED", "NIR"], r"\['NIR'\] are not in the dataset's files"),
])
def test_crop_classification_settings_without_a_counterpart_are_refused_by_key(key, value, words):
    raw = yaml.safe_load(OFFICIAL_CROP.read_text())
    raw["data"]["init_args"][key] = value
    with pytest.raises(ConfigError, match=words) as err:
        translate_terratorch(raw)
    assert err.value.key == f"data.init_args.{key}"


def test_nongeo_pixelwise_regression_config_fits_and_keeps_nan_targets_out_of_the_loss(tmp_path):
    """GenericNonGeoPixelwiseRegressionDataModule takes the segmentation module's keys: mapped the same way, with
    task regression and TerraTorch's no_label_replace (none: a nodata target pixel is NaN and skipped)."""
    data = _burn_scars(tmp_path / "hls_regression")
    raw = yaml.safe_load(BURNSCARS.format(root=tmp_path, data=data))
    raw["data"]["class_path"] = "terratorch.datamodules.GenericNonGeoPixelwiseRegressionDataModule"
    for key in ("num_classes", "no_label_replace"):
        raw["data"]["init_args"].pop(key)
    init = raw["model"]["init_args"]
    raw["model"]["class_path"] = "terratorch.tasks.PixelwiseRegressionTask"
    init["loss"] = "mse"
    for key in ("ignore_index", "class_names"):
        init.pop(key)
    init["model_args"].pop("num_classes")
    translated, _ = translate_terratorch(raw)
    assert translated["data"]["init_args"]["task"] == "regression"
    assert translated["data"]["init_args"]["no_label_replace"] is None
    cfg = write(raw, tmp_path / "regression.yaml")
    assert main(["fit", "--config", cfg]) == 0
    dm = GenericMultiModalDataModule(**{**translated["data"]["init_args"], "train_transform": None})
    dm.setup("fit")
    target = dm.datasets["train"][0]["mask"]
    assert target.dtype == torch.float32 and torch.isnan(target[:4]).all() and torch.isfinite(target[4:]).all()


def _eurosat_like(root, classes=("AnnualCrop", "Forest", "River"), per_class=3, size=32):
    """HLS-band chips in one folder per class (torchvision ImageFolder / EuroSAT layout), class-dependent values."""
    rng = np.random.default_rng(0)
    for index, name in enumerate(classes):
        folder = root / name
        folder.mkdir(parents=True)
        for i in range(per_class):
            profile = {"driver": "GTiff", "width": size, "height": size, "crs": "EPSG:32632",
                       "transform": from_origin(400000 + 1000 * i, 5000000 - 1000 * index, 10, 10)}
            with rasterio.open(folder / f"{name}_{i}.tif", "w", count=6, dtype="float32", **profile) as dst:
                dst.write((0.05 + 0.1 * index + rng.uniform(0, 0.02, (6, size, size))).astype("float32"))
    return root


def test_nongeo_classification_config_reads_labels_from_class_folders_and_fits(tmp_path):
    """GenericNonGeoClassificationDataModule (ImageFolder layout): the class of a chip is its folder, indices in
    sorted folder order as in TerraTorch; a config of it fits, tests and predicts."""
    roots = {split: _eurosat_like(tmp_path / "eurosat" / split) for split in ("train", "val", "test")}
    raw = yaml.safe_load(BURNSCARS.format(root=tmp_path, data=tmp_path))
    data = raw["data"]
    data["class_path"] = "terratorch.datamodules.GenericNonGeoClassificationDataModule"
    for key in ("img_grep", "label_grep", "no_label_replace", "train_split", "val_split", "test_split"):
        data["init_args"].pop(key)
    data["init_args"].update({f"{s}_data_root": str(r) for s, r in roots.items()}, num_classes=3,
                             predict_data_root=str(roots["test"] / "River"))
    model = raw["model"]
    model["class_path"] = "terratorch.tasks.ClassificationTask"
    init = model["init_args"]
    init.update(loss="ce", class_names=["AnnualCrop", "Forest", "River"])
    init.pop("ignore_index")
    init["model_args"].update(necks=[{"name": "AggregateTokens", "pooling": "mean"}], decoder="IdentityDecoder",
                              num_classes=3)
    init["model_args"].pop("decoder_channels")
    translated, _ = translate_terratorch(raw)
    assert translated["data"]["init_args"]["class_folders"] is True
    assert "train_label_data_root" not in translated["data"]["init_args"]
    cfg = write(raw, tmp_path / "eurosat.yaml")
    # TerraTorch's custom loss arguments, typed on the command line
    custom = ["--model.init_args.custom_loss=true", "--model.init_args.loss=custom_losses.ScaledCrossEntropy",
              "--model.init_args.custom_loss_kwargs={scale: 0.5}"]
    assert main(["fit", "--config", cfg, *custom]) == 0
    saved = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)["hyper_parameters"]
    assert saved["custom_loss"] and saved["custom_loss_kwargs"] == {"scale": 0.5}
    assert main(["test", "--config", cfg, "--ckpt_path", "best"]) == 0
    assert main(["predict", "--config", cfg, "--ckpt_path", "best"]) == 0
    rows = (tmp_path / "run" / "predictions" / "predictions.csv").read_text().splitlines()
    assert len(rows) == 4 and rows[0].startswith("file,class,class_name")

    dm = GenericMultiModalDataModule(**{**translated["data"]["init_args"], "train_transform": None})
    dm.setup("fit")
    targets = {Path(r.files["S2L2A"]).parent.name: r.target for r in dm.records("train")}
    assert targets == {"AnnualCrop": 0, "Forest": 1, "River": 2}
    with pytest.raises(ConfigError, match="class_folders: true gives one label per sample"):
        GenericMultiModalDataModule(modalities=["S2L2A"], task="segmentation", class_folders=True)


def test_sen1floods11_nongeo_module_reads_the_dataset_as_published(tmp_path):
    """TerraTorch's Sen1Floods11NonGeoDataModule (S2 only): mapped onto the dataset's own folders and split files
    (the .csv of the published dataset when its .txt is absent), six bands x 0.0001 standardised with its
    reflectance statistics; a config of it fits and predicts the test split."""
    from terramind_ft.data.synthetic import make_sen1floods11

    data = make_sen1floods11(tmp_path / "sen1floods11", size=64, layout="original",
                             splits={"train": 2, "val": 1, "test": 1})
    bands = ["BLUE", "GREEN", "RED", "NIR_NARROW", "SWIR_1", "SWIR_2"]
    raw = yaml.safe_load(BURNSCARS.format(root=tmp_path, data=tmp_path))
    raw["data"] = {"class_path": "terratorch.datamodules.Sen1Floods11NonGeoDataModule",
                   "init_args": {"data_root": str(data.root), "batch_size": 2, "num_workers": 0, "bands": bands}}
    model_args = raw["model"]["init_args"]["model_args"]
    model_args.update(backbone_modalities=["S2L1C"], backbone_bands={"S2L1C": bands})
    translated, notices = translate_terratorch(raw)
    init = translated["data"]["init_args"]
    assert init["train_split"].endswith("flood_train_data.csv") and init["val_split"].endswith("valid_data.csv")
    assert init["constant_scale"] == {"S2L1C": 0.0001} and init["output_bands"] == {"S2L1C": bands}
    assert init["means"]["S2L1C"][0] == 0.1412956
    cfg = write(raw, tmp_path / "sen1floods11_nongeo.yaml")
    assert main(["fit", "--config", cfg]) == 0
    assert main(["predict", "--config", cfg, "--ckpt_path", "best"]) == 0
    assert len(list((tmp_path / "run" / "predictions").glob("*_pred.tif"))) == 1

    dm = GenericMultiModalDataModule(**init)
    dm.setup("fit")
    sample = dm.datasets["val"][0]
    with rasterio.open(sample["filename"]["S2L1C"]) as src:
        blue = src.read(2).astype(np.float32) * 0.0001
    np.testing.assert_allclose(sample["image"]["S2L1C"][0].numpy(), (blue - 0.1412956) / 0.07406382, rtol=1e-4,
                               atol=1e-5)
