"""Several named test sets: one loader each, metrics per loader name, a metrics.json section per loader."""

from __future__ import annotations

import json

import pytest

from cli_configs import sen1floods11_config, write
from terramind_ft.cli import main
from terramind_ft.data import GenericMultiModalDataModule
from terramind_ft.errors import ConfigError


def _two_sets(tmp_path):
    config = sen1floods11_config(tmp_path)
    data = config["data"]["init_args"]
    split_dir = tmp_path / "data" / "splits"
    test_ids = [line for line in open(data["test_split"]).read().splitlines() if line.strip()]
    (split_dir / "first.txt").write_text(test_ids[0] + "\n")
    data["test_sets"] = {"all": {}, "first": {"split": str(split_dir / "first.txt")}}
    return config, test_ids


def test_each_test_set_is_a_loader_of_its_own(tmp_path):
    config, test_ids = _two_sets(tmp_path)
    dm = GenericMultiModalDataModule(**config["data"]["init_args"])
    dm.setup("test")
    loaders = dm.test_dataloader()
    assert dm.test_loader_names == ["all", "first"]
    assert [len(loader.dataset) for loader in loaders] == [len(test_ids), 1]


def test_unknown_test_set_key_is_named(tmp_path):
    config, _ = _two_sets(tmp_path)
    config["data"]["init_args"]["test_sets"]["first"]["splt"] = "x.txt"
    with pytest.raises(ConfigError, match=r"test_sets\.first\.splt.*Did you mean 'split'"):
        GenericMultiModalDataModule(**config["data"]["init_args"])


def test_test_logs_and_writes_metrics_per_loader(tmp_path):
    config, _ = _two_sets(tmp_path)
    config["trainer"]["limit_test_batches"] = None
    cfg = write(config, tmp_path / "sets.yaml")
    assert main(["fit", "--config", cfg]) == 0
    assert main(["test", "--config", cfg, "--ckpt_path", "best"]) == 0
    doc = json.loads((tmp_path / "run" / "checkpoints" / "metrics.json").read_text())
    assert set(doc["loaders"]) == {"all", "first"}
    for name in ("all", "first"):
        assert f"test/{name}/mIoU" in doc["metrics"] and f"test/{name}/loss" in doc["metrics"]
        assert set(doc["loaders"][name]["per_class"]) == {"Others", "Flood"}
    assert not any("dataloader_idx" in k for k in doc["metrics"])
    # the one-sample set is scored on its own sample: its figures differ from the whole set's
    assert doc["loaders"]["first"]["metrics"] != doc["loaders"]["all"]["metrics"]


def test_task_names_must_agree_with_the_data_module(tmp_path):
    config, _ = _two_sets(tmp_path)
    cfg = write(config, tmp_path / "sets.yaml")
    assert main(["fit", "--config", cfg]) == 0
    code = main(["test", "--config", cfg, "--ckpt_path", "best",
                 "--model.init_args.test_dataloaders_names", '["a", "b"]'])
    assert code == 2  # a config error


def test_terratorch_names_label_the_loaders_of_a_data_module(tmp_path):
    """test_dataloaders_names alone (TerraTorch's way) names the loaders the data module gives."""
    config = sen1floods11_config(tmp_path)
    config["model"]["init_args"]["test_dataloaders_names"] = ["holdout"]
    cfg = write(config, tmp_path / "named.yaml")
    assert main(["fit", "--config", cfg]) == 0
    assert main(["test", "--config", cfg, "--ckpt_path", "best"]) == 0
    doc = json.loads((tmp_path / "run" / "checkpoints" / "metrics.json").read_text())
    assert "test/holdout/mIoU" in doc["metrics"] and list(doc["loaders"]) == ["holdout"]
