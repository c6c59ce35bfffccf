"""The data module on the real TerraMesh chips (224 px, UTM, 7 modalities) and on our examples/terramesh copy."""

from __future__ import annotations

import filecmp
import re
from pathlib import Path

import numpy as np
import rasterio
import torch
import yaml

from terramind_ft.data.datamodule import GenericMultiModalDataModule
from terramind_ft.data.statistics import compute_statistics
from terramind_ft.modalities import LULC_CLASSES

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples" / "terramesh"
CHIPS = ("282D_485L_3_3", "38D_378R_2_3", "433D_629L_3_1", "609U_541L_3_0", "637U_59R_1_3")


def _splits(tmp_path, train=CHIPS[:3], val=CHIPS[3:]):
    (tmp_path / "train.txt").write_text("\n".join(train) + "\n")
    (tmp_path / "val.txt").write_text("\n".join(val) + "\n")
    return str(tmp_path / "train.txt"), str(tmp_path / "val.txt")


def _kwargs(root, modalities, folders, tmp_path, **extra):
    train_split, val_split = _splits(tmp_path)
    roots = {m: str(Path(root) / f) for m, f in zip(modalities, folders, strict=True)}
    kwargs = dict(task="segmentation", modalities=list(modalities), image_grep="*.tif", label_grep="*.tif",
                  train_data_root=roots, val_data_root=roots, predict_data_root=roots,
                  train_label_data_root=str(Path(root) / "LULC"), val_label_data_root=str(Path(root) / "LULC"),
                  train_split=train_split, val_split=val_split, num_classes=10, class_names=list(LULC_CLASSES),
                  batch_size=2)
    kwargs.update(extra)
    return kwargs


def test_quickstart_modalities_on_real_chips(terramesh_dir, tmp_path):
    dm = GenericMultiModalDataModule(**_kwargs(terramesh_dir, ["S2L2A", "S1RTC"], ["S2L2A", "S1RTC"], tmp_path,
                                               train_transform=["d4", {"random_crop": 128}]))
    report = dm.check()
    assert report.samples == {"train": 3, "val": 2, "predict": 5} and report.sizes["train"] == [(224, 224)]
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"]["S2L2A"].shape == (2, 12, 128, 128) and batch["image"]["S1RTC"].shape == (2, 2, 128, 128)
    assert batch["mask"].shape == (2, 128, 128) and batch["mask"].dtype == torch.int64
    assert 0 <= int(batch["mask"].min()) and int(batch["mask"].max()) <= 9
    val = next(iter(dm.val_dataloader()))
    # standardised with the pretraining statistics: values of real chips are of order one
    for m in ("S2L2A", "S1RTC"):
        x = val["image"][m]
        assert x.dtype == torch.float32 and x.shape[-2:] == (224, 224) and torch.isfinite(x).all()
        assert x.abs().mean() < 3
    assert not val["nodata"].any()
    # the float64 S1RTC chips are read as float32 from the right file
    record = dm.records("val")[0]
    with rasterio.open(record.files["S1RTC"]) as src:
        raw = src.read().astype(np.float32)
    vv = (raw[0] - dm.means["S1RTC"][0]) / dm.stds["S1RTC"][0]
    np.testing.assert_allclose(val["image"]["S1RTC"][0, 0].numpy(), vv, rtol=1e-4, atol=1e-5)


def test_all_pixel_modalities_of_the_real_chips(terramesh_dir, tmp_path):
    """Six inputs incl. aliases (S2RGB -> RGB), int16/uint8/float64 files, DEM whose transform differs by 1e-10 m."""
    mods = ["S2L1C", "S2L2A", "S2RGB", "S1RTC", "DEM", "NDVI"]
    dm = GenericMultiModalDataModule(**_kwargs(terramesh_dir, mods, mods, tmp_path, rgb_modality="S2RGB"))
    dm.check(["train"])
    assert dm.rgb_indices == [0, 1, 2]
    sample = dm.make_dataset("train")[0]
    assert [sample["image"][m].shape[0] for m in mods] == [13, 12, 3, 2, 1, 1]


def test_statistics_of_real_chips_match_numpy(terramesh_dir, tmp_path):
    dm = GenericMultiModalDataModule(**_kwargs(terramesh_dir, ["S2L2A", "S1RTC"], ["S2L2A", "S1RTC"], tmp_path))
    stats = compute_statistics(dm, "train", progress=False)
    arrays = [rasterio.open(terramesh_dir / "S1RTC" / f"{c}.tif").read() for c in CHIPS[:3]]
    stack = np.concatenate([a.reshape(2, -1) for a in arrays], axis=1).astype(np.float64)
    np.testing.assert_allclose(stats.means["S1RTC"], stack.mean(1), rtol=1e-6)
    np.testing.assert_allclose(stats.stds["S1RTC"], stack.std(1), rtol=1e-6)
    labels = np.concatenate([rasterio.open(terramesh_dir / "LULC" / f"{c}.tif").read().ravel() for c in CHIPS[:3]])
    counts = np.bincount(labels, minlength=10)
    assert [stats.class_counts[n] for n in LULC_CLASSES] == counts.tolist()


def test_plot_of_a_real_chip(terramesh_dir, tmp_path):
    dm = GenericMultiModalDataModule(**_kwargs(terramesh_dir, ["S2L2A", "S1RTC"], ["S2L2A", "S1RTC"], tmp_path))
    sample = dm.make_dataset("val")[1]
    path = dm.save_plot(sample, str(tmp_path / "chip.png"), prediction=sample["mask"])
    assert Path(path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_classification_of_real_chips_from_a_csv(terramesh_dir, tmp_path):
    """Dominant LULC class of each chip as its scene label."""
    table = tmp_path / "labels.csv"
    rows = []
    for c in CHIPS:
        lulc = rasterio.open(terramesh_dir / "LULC" / f"{c}.tif").read(1)
        rows.append(f"{c},{LULC_CLASSES[int(np.bincount(lulc.ravel()).argmax())]}")
    table.write_text("sample,class\n" + "\n".join(rows) + "\n")
    kwargs = _kwargs(terramesh_dir, ["S2L2A"], ["S2L2A"], tmp_path, task="classification",
                     train_label_data_root=str(table), val_label_data_root=str(table))
    dm = GenericMultiModalDataModule(**kwargs)
    dm.setup("fit")
    batch = next(iter(dm.val_dataloader()))
    assert batch["label"].tolist() == [LULC_CLASSES.index(r.split(",")[1]) for r in rows[3:]]


def test_examples_copy_is_complete_and_readme_config_works(terramesh_dir, monkeypatch):
    for folder in ("S2L2A", "S1RTC", "LULC"):
        names = sorted(p.name for p in (EXAMPLES / folder).iterdir())
        assert names == [f"{c}.tif" for c in sorted(CHIPS)]
        assert all(filecmp.cmp(EXAMPLES / folder / n, terramesh_dir / folder / n, shallow=False) for n in names)
    assert filecmp.cmp(EXAMPLES / "LICENSE", terramesh_dir / "LICENSE", shallow=False)
    splits = {s: (EXAMPLES / "splits" / f"{s}.txt").read_text().split() for s in ("train", "val", "test")}
    # training sees every class the test chip holds (a split where it did not scored mIoU 0.07 on snow over a valley)
    def classes(chip):
        with rasterio.open(EXAMPLES / "LULC" / f"{chip}.tif") as src:
            return set(np.unique(src.read(1)).tolist()) - {0}

    assert classes(splits["test"][0]) <= set().union(*(classes(c) for c in splits["train"]))
    assert splits["val"] == splits["test"] and not set(splits["train"]) & set(splits["test"])
    # the YAML in examples/terramesh/README.md, completed with val/test as its comment says
    block = re.search(r"```yaml\n(.*?)```", (EXAMPLES / "README.md").read_text(), re.S).group(1)
    init_args = yaml.safe_load(block)["data"]["init_args"]
    for s in ("val", "test"):
        init_args[f"{s}_data_root"] = init_args["train_data_root"]
        init_args[f"{s}_label_data_root"] = init_args["train_label_data_root"]
        init_args[f"{s}_split"] = f"examples/terramesh/splits/{s}.txt"
    monkeypatch.chdir(REPO)
    dm = GenericMultiModalDataModule(**init_args)
    assert dm.check().samples == {"train": 3, "val": 1, "test": 1}
