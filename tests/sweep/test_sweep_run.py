"""End-to-end sweeps of the toy LightningCLI program with submitit's in-process ("debug") executor."""

from __future__ import annotations

import json

import pytest
import yaml
from optuna.trial import TrialState

from terramind_ft import cli
from terramind_ft.sweep.search import open_study
from terramind_ft.sweep.spec import load_spec

from sweep_helpers import result_rows, study_trials


def _sweep(path, *extra, check: bool = False) -> int:
    # The parser check is covered by test_sweep_check (and by the first test here); it costs seconds.
    return cli.main(["sweep", "--config", str(path), *extra, *([] if check else ["--skip-check"])])


def test_three_trials_give_table_and_best_config(toy_sweep):
    spec = load_spec(toy_sweep(overrides={"trainer.max_epochs": 1}))
    assert _sweep(spec.path, check=True) == 0

    trials = study_trials(spec)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3
    rows = result_rows(spec)
    assert [r["trial"] for r in rows] == ["0", "1", "2"]
    assert {r["state"] for r in rows} == {"COMPLETE"}
    for row, t in zip(rows, trials):
        assert float(row["val/score"]) == pytest.approx(t.value)
        assert float(row["optimizer.init_args.lr"]) == pytest.approx(t.params["optimizer.init_args.lr"])
        assert int(row["model.hidden"]) == t.params["model.hidden"]
        run_dir = spec.trials_dir / f"trial_{t.number:04d}"
        assert row["run_dir"] == str(run_dir)
        assert (run_dir / "checkpoints" / "last.ckpt").is_file()
        trial_cfg = yaml.safe_load((run_dir / "trial_config.yaml").read_text())
        assert trial_cfg["optimizer"]["init_args"]["lr"] == t.params["optimizer.init_args.lr"]
        assert trial_cfg["trainer"]["default_root_dir"] == str(run_dir)
        assert trial_cfg["trainer"]["max_epochs"] == 1
        metrics = json.loads((run_dir / "metrics.json").read_text())["sweep"]
        assert metrics["state"] == "COMPLETE" and metrics["value"] == pytest.approx(t.value)
    md = (spec.output_dir / "results.md").read_text()
    assert "| trial | state | val/score | optimizer.init_args.lr | model.hidden |" in md

    best = max(trials, key=lambda t: t.value)
    best_cfg = yaml.safe_load((spec.output_dir / "best.yaml").read_text())
    base = yaml.safe_load(spec.base_config.read_text())
    assert best_cfg["optimizer"]["init_args"]["lr"] == best.params["optimizer.init_args.lr"]
    assert best_cfg["model"]["hidden"] == best.params["model.hidden"]
    assert best_cfg["trainer"]["max_epochs"] == 1  # the sweep's fixed override is part of the best config
    assert best_cfg["trainer"]["default_root_dir"] == str(spec.output_dir / "best")
    assert best_cfg["data"] == base["data"]
    assert f"best trial {best.number}" in (spec.output_dir / "best.yaml").read_text()


def test_failing_trial_is_recorded_and_sweep_completes(toy_sweep):
    spec = load_spec(toy_sweep(study={"sampler": "grid", "n_trials": 10},
                               search_space={"model.hidden": [4, 8, 16]},
                               overrides={"model.fail_if_hidden": 16, "trainer.max_epochs": 1}))
    assert spec.budget == 3
    assert _sweep(spec.path) == 0
    trials = study_trials(spec)
    assert len(trials) == 3
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert [t.params["model.hidden"] for t in failed] == [16]
    assert "RuntimeError: toy failure for hidden=16" in failed[0].user_attrs["error"]
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 2
    row = next(r for r in result_rows(spec) if r["state"] == "FAIL")
    assert "toy failure" in row["error"]
    run_dir = spec.trials_dir / f"trial_{failed[0].number:04d}"
    assert "Traceback" in (run_dir / "error.txt").read_text()
    assert json.loads((run_dir / "metrics.json").read_text())["sweep"]["state"] == "FAIL"
    # The best config comes from a completed trial.
    assert yaml.safe_load((spec.output_dir / "best.yaml").read_text())["model"]["hidden"] in (4, 8)


def test_rerun_continues_without_repeating_finishedstudy_trials(toy_sweep):
    first = load_spec(toy_sweep(study={"n_trials": 2}, overrides={"trainer.max_epochs": 1}))
    assert _sweep(first.path) == 0
    before = study_trials(first)
    assert len(before) == 2
    starts = {t.number: (first.trials_dir / f"trial_{t.number:04d}" / "fit_starts.txt").read_text() for t in before}

    second = load_spec(toy_sweep(study={"n_trials": 3}, overrides={"trainer.max_epochs": 1}))
    assert _sweep(second.path) == 0
    after = study_trials(second)
    assert len(after) == 3  # one new trial only
    assert [(t.number, t.params, t.value) for t in after[:2]] == [(t.number, t.params, t.value) for t in before]
    for number, text in starts.items():  # the finished trials were not trained again
        assert (second.trials_dir / f"trial_{number:04d}" / "fit_starts.txt").read_text() == text
    # A restarted worker does not replay the random draws of the first run.
    assert after[2].params != after[0].params

    # Nothing left: a third run starts nothing and still writes the table.
    assert _sweep(second.path) == 0
    assert len(study_trials(second)) == 3


def test_a_rerun_with_another_training_config_is_refused(toy_sweep, tmp_path, capsys):
    """Editing base.yaml (or the overrides) between runs of one study would rank trials trained two ways in one
    table; run-only keys and the searched keys may change."""
    first = load_spec(toy_sweep(study={"n_trials": 1}, overrides={"trainer.max_epochs": 1}))
    assert _sweep(first.path) == 0
    base = tmp_path / "base.yaml"
    original = base.read_text()
    base.write_text(original.replace("batch_size: 16", "batch_size: 32"))
    bigger = load_spec(toy_sweep(study={"n_trials": 2}, overrides={"trainer.max_epochs": 1}))
    capsys.readouterr()
    assert _sweep(bigger.path) != 0
    err = capsys.readouterr().err
    assert "training config changed since study 'toy' started" in err and "data.batch_size: 16 then, 32 now" in err
    assert len(study_trials(bigger)) == 1  # nothing ran
    # an override counts too
    base.write_text(original)
    assert _sweep(load_spec(toy_sweep(study={"n_trials": 2}, overrides={"trainer.max_epochs": 2})).path) != 0
    assert "trainer.max_epochs: 1 then, 2 now" in capsys.readouterr().err
    # the old config back, plus a run-only key and a searched key written in the file: the study continues
    base.write_text(original.replace("trainer:\n", "trainer:\n  enable_progress_bar: false\n")
                    .replace("hidden: 8", "hidden: 4"))
    assert _sweep(load_spec(toy_sweep(study={"n_trials": 2}, overrides={"trainer.max_epochs": 1})).path) == 0
    assert len(study_trials(bigger)) == 2


def test_median_pruner_stops_a_bad_trial(toy_sweep):
    spec = load_spec(toy_sweep(study={"n_trials": 2, "pruner": {"type": "median", "n_startup_trials": 1,
                                                                 "n_warmup_steps": 0}},
                               search_space={"optimizer.init_args.lr": {"type": "float", "low": 1e-7, "high": 0.1,
                                                                        "log": True}},
                               overrides={"trainer.max_epochs": 3}))
    study = open_study(spec)
    study.enqueue_trial({"optimizer.init_args.lr": 0.05})  # learns: sets the median
    study.enqueue_trial({"optimizer.init_args.lr": 1e-7})  # barely moves: below the median after epoch 0
    assert _sweep(spec.path) == 0
    good, bad = study_trials(spec)
    assert good.state == TrialState.COMPLETE and sorted(good.intermediate_values) == [0, 1, 2]
    assert bad.state == TrialState.PRUNED and sorted(bad.intermediate_values) == [0]
    run_dir = spec.trials_dir / "trial_0001"
    assert (run_dir / "fit_starts.txt").exists()
    assert json.loads((run_dir / "metrics.json").read_text())["sweep"]["state"] == "PRUNED"
    row = result_rows(spec)[1]
    assert row["state"] == "PRUNED" and "pruned after epoch 0" in row["note"]
    # A pruned trial is finished: the best config comes from the complete one.
    assert yaml.safe_load((spec.output_dir / "best.yaml").read_text())["optimizer"]["init_args"]["lr"] == 0.05


def test_rdb_storage_url(toy_sweep, tmp_path):
    spec = load_spec(toy_sweep(study={"n_trials": 1, "storage": f"sqlite:///{tmp_path / 'sweep.db'}"},
                               overrides={"trainer.max_epochs": 1}))
    assert spec.study.storage_is_url
    assert _sweep(spec.path) == 0
    assert (tmp_path / "sweep.db").is_file() and not (spec.output_dir / "optuna.journal").exists()
    [trial] = study_trials(spec)
    assert trial.state == TrialState.COMPLETE
    assert result_rows(spec)[0]["state"] == "COMPLETE"


def test_random_draws_depend_on_the_trial_number_not_the_worker():
    """Trial N gets the same parameters whichever process asks first: SLURM array tasks reproduce a local run."""
    import optuna

    from terramind_ft.sweep.search import TrialSeededRandomSampler

    space = {"lr": optuna.distributions.FloatDistribution(1e-5, 1e-1, log=True),
             "width": optuna.distributions.IntDistribution(4, 64, step=4),
             "head": optuna.distributions.CategoricalDistribution(["a", "b", "c"])}

    def draws(order):
        out = {}
        for number in order:
            study = optuna.create_study(sampler=TrialSeededRandomSampler(0))
            for _ in range(number):  # earlier trials asked elsewhere
                study.tell(study.ask(space), 0.0)
            out[number] = study.ask(space).params
        return out

    first, second = draws([0, 1, 2, 3]), draws([3, 1, 0, 2])
    assert first == second
    assert len({tuple(p.values()) for p in first.values()}) == 4
    assert all(1e-5 <= p["lr"] <= 1e-1 and p["width"] % 4 == 0 and p["head"] in "abc" for p in first.values())
