"""TorchGeoDataModule: a torchgeo NonGeoDataset (EuroSAT, in its own layout written here) as TerraMind input:
band names matched to the catalogue, pretraining statistics, fit and few-shot from YAML."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
import torch
import yaml
from rasterio.transform import from_origin

from cli_configs import FAST_TRAINER, TINY_MODEL_ARGS
from terramind_ft.cli import main
from terramind_ft.errors import ConfigError
from terramind_ft.modalities import MODALITIES

pytest.importorskip("torchgeo")

CLASSES = ["AnnualCrop", "Forest", "SeaLake"]


@pytest.fixture
def eurosat(tmp_path):
    """torchgeo's EuroSAT layout: ds/images/remote_sensing/otherDatasets/sentinel_2/tif/<Class>/<Class>_<n>.tif
    (13 bands, B01..B12 then B8A) and eurosat-{train,val,test}.txt; band k holds 100 * (k + 1)."""
    from torchgeo.datasets import EuroSAT

    root = tmp_path / "eurosat"
    base = root / EuroSAT.base_dir
    names = {"train": [], "val": [], "test": []}
    for c, cls in enumerate(CLASSES):
        (base / cls).mkdir(parents=True)
        for n in range(6):
            data = np.stack([np.full((64, 64), 100.0 * (k + 1) + 50 * c, np.float32) for k in range(13)])
            with rasterio.open(base / cls / f"{cls}_{n}.tif", "w", driver="GTiff", width=64, height=64, count=13,
                               dtype="float32", crs="EPSG:32631", transform=from_origin(0, 0, 10, 10)) as dst:
                dst.write(data)
            names["train" if n < 2 else "val" if n < 3 else "test"].append(f"{cls}_{n}.jpg")
    for split, files in names.items():
        (root / EuroSAT.split_filenames[split]).write_text("\n".join(files) + "\n")
    return root


def _data(root, **extra):
    return {"class_path": "TorchGeoDataModule",
            "init_args": {"dataset": "EuroSAT", "dataset_args": {"root": str(root)}, "modality": "S2L1C",
                          "batch_size": 2, **extra}}


def test_bands_are_matched_and_standardised_with_the_catalogue(eurosat):
    from terramind_ft.data import TorchGeoDataModule

    dm = TorchGeoDataModule(**_data(eurosat)["init_args"])
    sample = dm.make_dataset("train")[0]
    s2 = MODALITIES["S2L1C"]
    assert dm.bands == list(s2.bands)  # B8A moved from last to its catalogue place
    x = sample["image"]["S2L1C"]
    file_values = [100.0 * (k + 1) for k in range(13)]  # class 0: B01..B12, B8A
    catalogue_order = [0, 1, 2, 3, 4, 5, 6, 7, 12, 8, 9, 10, 11]  # B8A (file band 12) after B08
    expected = torch.tensor([(file_values[f] - s2.mean[i]) / s2.std[i] for i, f in enumerate(catalogue_order)])
    torch.testing.assert_close(x[:, 0, 0], expected, rtol=1e-5, atol=1e-5)
    assert int(sample["label"]) in (0, 1, 2) and dm.class_names == CLASSES


def test_a_band_the_modality_lacks_is_named(eurosat):
    from terramind_ft.data import TorchGeoDataModule

    dm = TorchGeoDataModule(**_data(eurosat, modality="S1GRD")["init_args"])
    with pytest.raises(ConfigError, match=r"bands \['B01'.*are not S1GRD bands"):
        dm.make_dataset("train")


def _classification_config(tmp_path, eurosat):
    """A tiny scene-classification config over the EuroSAT layout, written to tmp_path/eurosat.yaml."""
    model_args = {**TINY_MODEL_ARGS, "backbone_modalities": ["S2L1C"],
                  "necks": [{"name": "AggregateTokens", "pooling": "mean"}], "decoder": "IdentityDecoder",
                  "num_classes": 3}
    model_args.pop("decoder_channels")
    config = {"seed_everything": 0, "trainer": {**FAST_TRAINER, "default_root_dir": str(tmp_path / "run")},
              "data": _data(eurosat),
              "model": {"class_path": "ClassificationTask", "init_args": {"model_args": model_args,
                                                                          "class_names": CLASSES}}}
    cfg = tmp_path / "eurosat.yaml"
    cfg.write_text(yaml.safe_dump(config, sort_keys=False))
    return cfg


def test_fit_and_few_shot_from_yaml(tmp_path, eurosat):
    cfg = _classification_config(tmp_path, eurosat)
    assert main(["fit", "--config", str(cfg)]) == 0
    assert (tmp_path / "run" / "checkpoints" / "best.ckpt").is_file()
    assert main(["few-shot", "--config", str(cfg), "--ways", "3", "--shots", "1", "--queries", "1",
                 "--episodes", "10"]) == 0
    doc = json.loads((tmp_path / "run" / "few_shot" / "metrics.json").read_text())["few_shot"]
    assert doc["chips"] == 9 and set(doc["per_class"]) <= set(CLASSES)


def test_embed_a_torchgeo_split_without_files(tmp_path, eurosat):
    """GeoParquet rows of a file-less dataset: ids from the dataset, no footprint; --tile and patch GeoTIFFs are
    refused with the reason."""
    pq = pytest.importorskip("pyarrow.parquet")
    pytest.importorskip("pyproj")
    cfg = _classification_config(tmp_path, eurosat)
    out = tmp_path / "emb"
    assert main(["embed", "--config", str(cfg), "--split", "test", "--output", str(out)]) == 0
    rows = pq.read_table(out / "embeddings.parquet").to_pylist()
    assert len(rows) == 9 and rows[0]["chip_id"] == "EuroSAT_test_000000" and rows[0]["geometry"] is None
    assert len(rows[0]["embedding"]) == 192
    assert main(["embed", "--config", str(cfg), "--split", "test", "--output", str(out)]) == 0  # resumes: no-op
    assert pq.read_table(out / "embeddings.parquet").to_pylist() == rows
    assert main(["embed", "--config", str(cfg), "--split", "test", "--tile", "32", "--output", str(out)]) == 2
    assert main(["embed", "--config", str(cfg), "--split", "test", "--pooling", "none", "--output", str(out)]) == 2
