"""Dotted keys and their values are checked with the base config's own LightningCLI parser."""

from __future__ import annotations

import yaml

import pytest

from terramind_ft import cli
from terramind_ft.errors import ConfigError
from terramind_ft.sweep.spec import check_against_cli, load_spec


def test_valid_sweep_passes_and_writes_resolved_base(toy_sweep):
    spec = load_spec(toy_sweep(overrides={"trainer.max_epochs": 1}))
    resolved = check_against_cli(spec)
    # The first checked set: overrides plus the first choice / lower bound, every level spelled out.
    assert resolved["optimizer"]["class_path"] == "torch.optim.SGD"
    assert resolved["optimizer"]["init_args"]["lr"] == 1e-3
    assert resolved["optimizer"]["init_args"]["momentum"] == 0.0  # a default the base YAML leaves out
    assert resolved["trainer"]["max_epochs"] == 1
    assert yaml.safe_load(spec.resolved_base_path.read_text())["model"]["hidden"] == 4


def test_unknown_key_is_named_with_did_you_mean(toy_sweep):
    spec = load_spec(toy_sweep(search_space={"optimizer.init_args.lrr": [0.1, 0.01]}))
    with pytest.raises(ConfigError) as info:
        check_against_cli(spec)
    assert info.value.key == "search_space.optimizer.init_args.lrr"
    assert "Did you mean 'optimizer.init_args.lr'" in str(info.value)


def test_value_rejected_by_parser_is_named(toy_sweep):
    spec = load_spec(toy_sweep(search_space={"model.hidden": [4, "wide"]}))
    with pytest.raises(ConfigError) as info:
        check_against_cli(spec)
    assert info.value.key == "search_space.model.hidden"
    assert "'wide'" in str(info.value)


def test_bad_override_is_named(toy_sweep):
    spec = load_spec(toy_sweep(overrides={"trainer.max_epoch": 1}))
    with pytest.raises(ConfigError) as info:
        check_against_cli(spec)
    assert info.value.key == "overrides.trainer.max_epoch"
    assert "Did you mean 'trainer.max_epochs'" in str(info.value)


def test_command_line_check(toy_sweep, capsys):
    assert cli.main(["sweep", "--check", "--config", str(toy_sweep())]) == 0
    assert "OK (2 search-space key(s), 3 trial(s), launcher debug)" in capsys.readouterr().out
    bad = toy_sweep("bad.yaml", study={"n_trails": 3})
    assert cli.main(["sweep", "--config", str(bad)]) == 2
    assert "study.n_trails: unknown key. Did you mean 'n_trials'" in capsys.readouterr().err
