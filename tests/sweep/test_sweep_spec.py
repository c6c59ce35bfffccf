"""The sweep file schema: every mistake is reported with its dotted key before anything runs."""

from __future__ import annotations

import pytest

from terramind_ft.errors import ConfigError
from terramind_ft.sweep.spec import format_override, load_spec


def _error(make, **changes) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_spec(make(**changes))
    return info.value


def test_valid_file_is_resolved(toy_sweep, tmp_path):
    path = toy_sweep(study={"direction": "MAX", "pruner": {"type": "median", "n_startup_trials": 2}})
    spec = load_spec(path)
    assert spec.base_config == (tmp_path / "base.yaml").resolve()
    assert spec.output_dir == (tmp_path / "out").resolve()
    assert spec.study.direction == "maximize"
    assert spec.study.storage == str(tmp_path / "out" / "optuna.journal")
    assert spec.study.pruner == "median" and spec.study.pruner_args == {"n_startup_trials": 2}
    lr, hidden = spec.search_space
    assert (lr.kind, lr.low, lr.high, lr.log) == ("float", 1e-3, 1e-1, True)
    assert (hidden.kind, hidden.choices) == ("categorical", (4, 8, 16))
    assert spec.budget == 3
    assert spec.launcher.cluster == "debug"


def test_yaml_1_1_exponent_is_a_number(toy_sweep, tmp_path):
    # PyYAML alone reads "1e-5" as a string; learning rates are written that way.
    path = tmp_path / "sweep.yaml"
    text = toy_sweep().read_text().replace("low: 0.001", "low: 1e-5")
    path.write_text(text)
    assert load_spec(path).search_space[0].low == 1e-5


@pytest.mark.parametrize(
    ("changes", "key", "text"),
    [
        ({"serach_space": {}}, "serach_space", "Did you mean 'search_space'"),
        ({"study": {"n_trails": 3}}, "study.n_trails", "Did you mean 'n_trials'"),
        ({"study": {"direction": "up"}}, "study.direction", "Valid values"),
        ({"study": {"sampler": "tpee"}}, "study.sampler", "Did you mean 'tpe'"),
        ({"study": {"pruner": "hyperbnd"}}, "study.pruner", "Did you mean 'hyperband'"),
        ({"study": {"n_trials": 0}}, "study.n_trials", "must be >= 1"),
        ({"study": {"name": "a b"}}, "study.name", "names folders"),
        ({"launcher": {"cluster": "slrum"}}, "launcher.cluster", "Did you mean 'slurm'"),
        ({"launcher": {"cluster": "slurm"}}, "launcher.timeout_min", "required with cluster: slurm"),
        ({"launcher": {"slurm": {"partion": "gpu"}}}, "launcher.slurm.partion", "Did you mean 'partition'"),
        ({"launcher": {"gpus": "0,1"}}, "launcher.gpus", "list of GPU ids"),
        ({"launcher": {"gpus_per_trial": 2}}, "launcher.gpus_per_trial", "train.sbatch"),
        ({"launcher": {"slurm": {"extra_sbatch": ["qos=high"]}}}, "launcher.slurm.extra_sbatch",
         "not an sbatch option"),
        ({"base_config": "missing.yaml"}, "base_config", "not found"),
        ({"cli": "no_colon"}, "cli", "module:function"),
        ({"overrides": {"model.hidden": 4}}, "overrides.model.hidden", "also in search_space"),
        ({"overrides": {"trainer.default_root_dir": "x"}}, "overrides.trainer.default_root_dir", "one folder per"),
        ({"study": {"storage": "sqlite:///x.db"}, "launcher": {"cluster": "local", "workers": 2}}, "study.storage",
         "SQLite"),
        ({"study": {"storage": "redis://host"}}, "study.storage", "SQLAlchemy URL"),
        ({"study": {"heartbeat_s": 60, "stale_after_s": 90}}, "study.stale_after_s", "twice"),
    ],
)
def test_bad_keys_and_values_name_the_key(toy_sweep, changes, key, text):
    err = _error(toy_sweep, **changes)
    assert err.key == key
    assert text in str(err)
    assert "sweep.yaml" in str(err) or key in ("base_config",)


@pytest.mark.parametrize(
    ("dist", "key", "text"),
    [
        ({"type": "float", "low": 1e-3, "high": 1e-4}, "search_space.x.y", "low < high"),
        ({"type": "float", "low": 0.0, "high": 1.0, "log": True}, "search_space.x.y.low", "log-scale"),
        ({"type": "float", "low": 0.1, "high": 1.0, "log": True, "step": 0.1}, "search_space.x.y",
         "cannot be combined"),
        ({"type": "float", "low": 0.1}, "search_space.x.y", "needs 'low' and 'high'"),
        ({"type": "int", "low": 1.5, "high": 4}, "search_space.x.y.low", "integer"),
        ({"type": "normal", "low": 0, "high": 1}, "search_space.x.y.type", "Valid values"),
        ({"type": "float", "lo": 0, "high": 1}, "search_space.x.y.lo", "Did you mean 'low'"),
        ({"type": "categorical", "choices": []}, "search_space.x.y.choices", "non-empty list"),
        ({"type": "categorical", "choices": [1, 1]}, "search_space.x.y.choices", "repeated"),
        ({"type": "categorical", "choices": [1], "log": True}, "search_space.x.y.log", "categorical"),
        ({"type": "float", "low": 0, "high": 1, "choices": [1]}, "search_space.x.y.choices", "type: categorical"),
        (0.5, "search_space.x.y", "overrides"),
    ],
)
def test_bad_distributions(toy_sweep, dist, key, text):
    err = _error(toy_sweep, search_space={"x.y": dist})
    assert err.key == key
    assert text in str(err)


def test_bad_dotted_key(toy_sweep):
    err = _error(toy_sweep, search_space={"model..hidden": [1, 2]})
    assert err.key == "search_space.model..hidden"


def test_grid_needs_finite_values_and_caps_the_budget(toy_sweep):
    err = _error(toy_sweep, study={"sampler": "grid"})
    assert err.key == "search_space.optimizer.init_args.lr" and "step" in str(err)
    spec = load_spec(toy_sweep(study={"sampler": "grid", "n_trials": 50},
                               search_space={"model.hidden": [4, 8], "data.batch_size":
                                             {"type": "int", "low": 8, "high": 32, "step": 8}}))
    assert spec.distribution("data.batch_size").grid() == [8, 16, 24, 32]
    assert spec.budget == 8  # 2 x 4, not 50


def test_slurm_launcher_block(toy_sweep):
    spec = load_spec(toy_sweep(launcher={
        "cluster": "slurm", "timeout_min": 90, "gpus_per_trial": 1, "cpus_per_trial": 6, "setup": ["module load x"],
        "slurm": {"partition": "gpu", "account": "proj", "array_parallelism": 2,
                  "extra_sbatch": ["--qos=high", "#SBATCH --exclusive", "--mail-type END"]}}))
    launcher = spec.launcher
    assert (launcher.timeout_min, launcher.gpus_per_trial, launcher.cpus_per_trial) == (90, 1, 6)
    assert launcher.slurm.extra_sbatch == {"qos": "high", "exclusive": True, "mail-type": "END"}
    assert launcher.setup == ("module load x",)


def test_command_line_overrides_of_cluster_and_output_dir(toy_sweep, tmp_path):
    path = toy_sweep(launcher={"cluster": "slurm", "timeout_min": 30, "slurm": {"partition": "gpu"}})
    spec = load_spec(path, output_dir=tmp_path / "elsewhere", cluster="debug")
    assert spec.launcher.cluster == "debug" and spec.launcher.slurm.partition == "gpu"
    assert spec.output_dir == tmp_path / "elsewhere"
    assert spec.study.storage == str(tmp_path / "elsewhere" / "optuna.journal")
    with pytest.raises(ConfigError) as info:  # the slurm rules apply to an overridden cluster too
        load_spec(toy_sweep(), cluster="slurm")
    assert info.value.key == "launcher.timeout_min"


def test_override_formatting():
    assert format_override("optimizer.init_args.lr", 1e-4) == "--optimizer.init_args.lr=0.0001"
    assert format_override("model.init_args.model_args.backbone", "terramind_v1_tiny") == \
        "--model.init_args.model_args.backbone=terramind_v1_tiny"
    assert format_override("a.b", [256, 128]) == "--a.b=[256, 128]"
    assert format_override("a.b", True) == "--a.b=true"
    assert format_override("a.b", None) == "--a.b=null"
