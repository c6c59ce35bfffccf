"""compute-statistics: exact per-band moments with nodata excluded, class frequencies, the CLI and its YAML."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
import yaml

from terramind_ft.data.datamodule import GenericMultiModalDataModule
from terramind_ft.data.statistics import compute_statistics, main
from terramind_ft.data.synthetic import make_classification, make_sen1floods11


@pytest.fixture(scope="module")
def flood_nodata(tmp_path_factory):
    return make_sen1floods11(tmp_path_factory.mktemp("stats"), size=32, splits={"train": 5, "val": 1},
                             s2_nodata=0, nan_fraction=0.05)


def _stack(paths, nodata=None):
    arrays = []
    for p in paths:
        with rasterio.open(p) as src:
            a = src.read().astype(np.float64)
        if nodata is not None:
            a[a == nodata] = np.nan
        arrays.append(a.reshape(a.shape[0], -1))
    return np.concatenate(arrays, axis=1)


def test_moments_exclude_nodata_and_nan_and_match_numpy(flood_nodata):
    dm = GenericMultiModalDataModule(**flood_nodata.datamodule_kwargs(train_transform=[{"random_crop": 16}]))
    stats = compute_statistics(dm, "train", progress=False)
    records = dm.records("train")
    s2 = _stack([r.files["S2L1C"] for r in records], nodata=0)
    s1 = _stack([r.files["S1GRD"] for r in records])
    assert np.isnan(s2).any() and np.isnan(s1).any()
    np.testing.assert_allclose(stats.means["S2L1C"], np.nanmean(s2, 1), rtol=1e-9)
    np.testing.assert_allclose(stats.stds["S2L1C"], np.nanstd(s2, 1), rtol=1e-9)
    np.testing.assert_allclose(stats.means["S1GRD"], np.nanmean(s1, 1), rtol=1e-6)
    np.testing.assert_allclose(stats.stds["S1GRD"], np.nanstd(s1, 1), rtol=1e-6)
    assert stats.nodata_values["S1GRD"] == int(np.isnan(s1).sum())
    assert stats.valid_values["S2L1C"] == int(np.isfinite(s2).sum())  # no crop: the augmentation is off
    labels = np.concatenate([rasterio.open(r.label_file).read().ravel() for r in records])
    assert stats.class_counts == {"Others": int((labels == 0).sum()), "Flood": int((labels == 1).sum())}
    assert stats.ignored_labels == int((labels == -1).sum()) > 0
    assert sum(stats.class_frequencies.values()) == pytest.approx(1.0)


def test_output_bands_and_max_samples(flood_nodata):
    dm = GenericMultiModalDataModule(**flood_nodata.datamodule_kwargs(output_bands={"S2L1C": ["SWIR_2", "RED"]},
                                                                      rgb_indices=[0]))
    stats = compute_statistics(dm, "train", max_samples=2, progress=False)
    assert stats.samples == 2
    s2 = _stack([r.files["S2L1C"] for r in dm.records("train")[:2]], nodata=0)
    np.testing.assert_allclose(stats.means["S2L1C"], np.nanmean(s2[[12, 3]], 1), rtol=1e-9)


def test_pasted_statistics_standardise_the_train_split(flood_nodata, tmp_path):
    """Round trip: the printed snippet, pasted as means/stds, gives mean 0 / std 1 on valid train pixels."""
    dm = GenericMultiModalDataModule(**flood_nodata.datamodule_kwargs())
    snippet = yaml.safe_load(compute_statistics(dm, "train", progress=False).to_yaml("x.yaml"))
    assert set(snippet) == {"means", "stds"}  # class frequencies are comments: pasting cannot break a config
    dm = GenericMultiModalDataModule(**flood_nodata.datamodule_kwargs(means=snippet["means"], stds=snippet["stds"],
                                                                      no_data_replace=None))
    dataset = dm.make_dataset("train")
    x = torch.cat([dataset[i]["image"]["S1GRD"].reshape(2, -1) for i in range(len(dataset))], 1)
    x = x.double().numpy()
    np.testing.assert_allclose(np.nanmean(x, 1), 0, atol=1e-3)
    np.testing.assert_allclose(np.nanstd(x, 1), 1, atol=1e-3)


def test_classification_counts_samples(tmp_path):
    data = make_classification(tmp_path, num_classes=3, splits={"train": 9})
    dm = GenericMultiModalDataModule(**data.datamodule_kwargs(val_data_root=None, test_data_root=None))
    stats = compute_statistics(dm, "train", progress=False)
    expected = np.bincount([data.labels[p] for p in data.prefixes["train"]], minlength=3)
    assert list(stats.class_counts.values()) == expected.tolist() and stats.label_unit == "samples"
    assert "#   class_1:" in stats.to_yaml()


def _config(path: Path, init_args, class_path="terratorch.datamodules.GenericMultiModalDataModule"):
    path.write_text(yaml.safe_dump({"model": {"class_path": "terratorch.tasks.SemanticSegmentationTask",
                                              "init_args": {"model_args": {"backbone": "never_built"}}},
                                    "data": {"class_path": class_path, "init_args": init_args}}))
    return str(path)


def test_cli_prints_and_writes_a_yaml_snippet(flood_nodata, tmp_path, capsys):
    base = _config(tmp_path / "base.yaml", flood_nodata.datamodule_kwargs(batch_size=4))
    override = tmp_path / "override.yaml"
    override.write_text(yaml.safe_dump({"data": {"init_args": {"output_bands": {"S1GRD": ["VH"]}}}}))
    out = tmp_path / "stats" / "snippet.yaml"
    assert main(["--config", base, "-c", str(override), "--no-progress", "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed == out.read_text()
    snippet = yaml.safe_load(printed)
    assert list(snippet["means"]) == ["S2L1C", "S1GRD"] and len(snippet["means"]["S1GRD"]) == 1  # override won
    assert "# class_frequencies:" in printed and "Flood" in printed and "split: train, 5 samples" in printed
    s1 = _stack([r for r in sorted(Path(flood_nodata.data_roots["S1GRD"]).iterdir())
                 if r.name.split("_S1Hand")[0] in flood_nodata.prefixes["train"]])
    assert snippet["means"]["S1GRD"][0] == pytest.approx(np.nanmean(s1[1]), abs=1e-4)


def test_cli_errors_are_one_line_with_the_key(flood_nodata, tmp_path, capsys):
    bad = _config(tmp_path / "bad.yaml", {**flood_nodata.datamodule_kwargs(), "batch_sise": 4})
    assert main(["--config", bad]) == 1
    err = capsys.readouterr().err
    assert "data.init_args: GenericMultiModalDataModule got unexpected argument(s) 'batch_sise'" in err
    assert "Did you mean 'batch_size'?" in err
    other = _config(tmp_path / "other.yaml", {}, class_path="torchgeo.datamodules.Sen1Floods11DataModule")
    assert main(["--config", other]) == 1
    assert "data.class_path: compute-statistics reads GenericMultiModalDataModule" in capsys.readouterr().err
    (tmp_path / "nodata.yaml").write_text("model: {}\n")
    assert main(["--config", str(tmp_path / "nodata.yaml")]) == 1
    assert "no 'data' section" in capsys.readouterr().err
    assert main(["--config", str(tmp_path / "missing.yaml")]) == 1
    missing_split = _config(tmp_path / "split.yaml", flood_nodata.datamodule_kwargs(train_split="/x/train.txt"))
    assert main(["--config", missing_split]) == 1
    assert "data.init_args.train_split: split file /x/train.txt does not exist" in capsys.readouterr().err


def test_dispatcher_runs_compute_statistics(flood_nodata, tmp_path, capsys):
    from terramind_ft.cli import main as cli_main

    config = _config(tmp_path / "c.yaml", flood_nodata.datamodule_kwargs())
    assert cli_main(["compute-statistics", "--config", config, "--no-progress", "--max-samples", "1"]) == 0
    assert "split: train, 1 samples" in capsys.readouterr().out
