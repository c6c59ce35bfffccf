"""Faults: dead workers, stale trials, failed trials re-run on request, pruning and a missing metric."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from datetime import datetime
from types import SimpleNamespace

import optuna
import pytest
from optuna.trial import TrialState

from terramind_ft import cli
from terramind_ft.sweep.search import (
    HEARTBEAT_FILE,
    MetricNotLoggedError,
    TrialMetricCallback,
    is_stale,
    open_study,
    trial_values,
)
from terramind_ft.sweep.spec import load_spec

from sweep_helpers import result_rows, study_trials


def _sweep(path, *extra) -> int:
    return cli.main(["sweep", "--config", str(path), *extra, "--skip-check"])


def test_stale_running_trial_resumes_from_its_last_checkpoint(toy_sweep):
    # A checkpoint after the first of two epochs, from a study of its own (same seed, so its trial 0 drew the
    # values the main study's trial 0 draws): the main study's training config stays the same throughout.
    source = load_spec(toy_sweep("source.yaml", study={"n_trials": 1, "name": "source"}, output_dir="source",
                                 overrides={"trainer.max_epochs": 1}))
    assert _sweep(source.path) == 0
    one_run = load_spec(toy_sweep(study={"n_trials": 1}, overrides={"trainer.max_epochs": 2}))
    assert _sweep(one_run.path) == 0
    done = study_trials(one_run)[0]
    assert done.params == study_trials(source)[0].params

    # A worker died while running trial 1: RUNNING in the storage, a run folder holding the checkpoint of
    # its first epoch, and a heartbeat that stopped long ago.
    study = open_study(one_run, create=False)
    study.enqueue_trial(dict(done.params))
    dead = study.ask()
    trial_values(one_run, dead)  # a worker suggests the values first thing
    run_dir = one_run.trials_dir / "trial_0001"
    shutil.copytree(source.trials_dir / "trial_0000" / "checkpoints", run_dir / "checkpoints")
    dead.set_user_attr("run_dir", str(run_dir))
    (run_dir / HEARTBEAT_FILE).write_text(json.dumps({"stopped": False}))
    old = time.time() - 3600
    os.utime(run_dir / HEARTBEAT_FILE, (old, old))

    # Re-run with one more trial: the dead worker's trial resumes first, then one new trial runs.
    two_epochs = load_spec(toy_sweep(study={"n_trials": 3}, overrides={"trainer.max_epochs": 2}))
    assert _sweep(two_epochs.path) == 0
    trials = study_trials(two_epochs)
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL] + [TrialState.COMPLETE] * 2
    assert "retry_of" not in trials[3].user_attrs
    assert (two_epochs.trials_dir / "trial_0003" / "fit_starts.txt").read_text().split() == ["0"]
    retry = trials[2]
    assert retry.user_attrs["retry_of"] == 1
    assert retry.user_attrs["run_dir"] == str(run_dir)
    assert retry.params == trials[1].params
    assert retry.user_attrs["resumed_from"] == str(run_dir / "checkpoints" / "last.ckpt")
    assert (run_dir / "fit_starts.txt").read_text().split() == ["1"]  # resumed at epoch 1, not 0
    assert sorted(json.loads((run_dir / "metric_history.json").read_text())) == ["1"]
    rows = {r["trial"]: r for r in result_rows(two_epochs)}
    assert rows["1"]["state"] == "INTERRUPTED" and "re-run as trial 2" in rows["1"]["note"]
    assert "re-run of trial 1" in rows["2"]["note"]


@pytest.fixture
def keep_sigint():
    """Lightning ignores SIGINT after handling a KeyboardInterrupt; give pytest its handler back."""
    handler = signal.getsignal(signal.SIGINT)
    yield
    signal.signal(signal.SIGINT, handler)


def test_ctrl_c_stops_the_sweep_and_the_rerun_resumes_the_trial(toy_sweep, tmp_path, keep_sigint):
    flag = tmp_path / "press_ctrl_c"
    flag.write_text("")
    spec = load_spec(toy_sweep(study={"n_trials": 1},
                               overrides={"trainer.max_epochs": 2, "model.ctrl_c_file": str(flag)}))
    assert _sweep(spec.path) == 130
    [trial] = study_trials(spec)
    assert trial.state == TrialState.RUNNING  # not FAIL: it is resumable
    run_dir = spec.trials_dir / "trial_0000"
    assert json.loads((run_dir / HEARTBEAT_FILE).read_text())["stopped"] is True
    assert is_stale(spec, trial)  # at once, not after stale_after_s

    assert _sweep(spec.path) == 0
    trials = study_trials(spec)
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE]
    assert trials[1].user_attrs["retry_of"] == 0
    assert (run_dir / "fit_starts.txt").read_text().split() == ["0", "1"]
    assert result_rows(spec)[0]["state"] == "INTERRUPTED"


def test_staleness_rules(toy_sweep, tmp_path):
    spec = load_spec(toy_sweep(study={"heartbeat_s": 10, "stale_after_s": 100}))
    run_dir = tmp_path / "r"
    run_dir.mkdir()
    now = time.time()

    def trial(started_ago: float):
        return SimpleNamespace(state=TrialState.RUNNING, user_attrs={"run_dir": str(run_dir)},
                               datetime_start=datetime.fromtimestamp(now - started_ago))

    assert not is_stale(spec, trial(10), now)  # no heartbeat yet, just started
    assert is_stale(spec, trial(500), now)  # no heartbeat long after the start
    beat = run_dir / HEARTBEAT_FILE
    beat.write_text(json.dumps({"stopped": False}))
    assert not is_stale(spec, trial(500), now)  # fresh heartbeat
    os.utime(beat, (now - 200, now - 200))
    assert is_stale(spec, trial(500))  # heartbeat too old
    beat.write_text(json.dumps({"stopped": True}))
    assert is_stale(spec, trial(500))  # the worker marked it stopped (Ctrl-C, preemption)


def _fake_trainer(metrics, epoch=0):
    return SimpleNamespace(sanity_checking=False, callback_metrics=metrics, current_epoch=epoch, is_global_zero=True)


def test_metric_callback_prunes_and_reports(tmp_path):
    study = optuna.create_study(direction="maximize",
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=0))
    good = study.ask()
    cb = TrialMetricCallback(good, "val/score", "maximize", tmp_path / "a", prune=True)
    (tmp_path / "a").mkdir()
    cb.on_validation_end(_fake_trainer({"val/score": 0.9}), None)
    study.tell(good, cb.objective_value("best"))

    (tmp_path / "b").mkdir()
    bad = study.ask()
    cb = TrialMetricCallback(bad, "val/score", "maximize", tmp_path / "b", prune=True)
    with pytest.raises(optuna.TrialPruned):
        cb.on_validation_end(_fake_trainer({"val/score": 0.1}), None)
    assert json.loads((tmp_path / "b" / "metric_history.json").read_text()) == {"0": 0.1}

    # Without pruning, the same value is only recorded; "best" and "last" differ over two epochs.
    (tmp_path / "c").mkdir()
    cb = TrialMetricCallback(study.ask(), "val/score", "maximize", tmp_path / "c", prune=False)
    cb.on_validation_end(_fake_trainer({"val/score": 0.5}, epoch=0), None)
    cb.on_validation_end(_fake_trainer({"val/score": 0.2}, epoch=1), None)
    assert (cb.objective_value("best"), cb.objective_value("last")) == (0.5, 0.2)


def test_missing_metric_names_the_logged_ones(tmp_path):
    study = optuna.create_study()
    cb = TrialMetricCallback(study.ask(), "val/mIoU", "maximize", tmp_path, prune=False)
    with pytest.raises(MetricNotLoggedError) as info:
        cb.on_validation_end(_fake_trainer({"val/miou": 0.3, "val/loss": 1.0}), None)
    assert "Did you mean 'val/miou'" in str(info.value) and "val/loss" in str(info.value)


def test_status_before_any_run_says_how_to_start(toy_sweep, capsys):
    spec = load_spec(toy_sweep())
    assert _sweep(spec.path, "--status") == 2
    assert "no sweep has run yet" in capsys.readouterr().err
    assert not spec.output_dir.exists()  # asking for the status created nothing


def test_status_and_retry_failed(toy_sweep, capsys):
    spec = load_spec(toy_sweep(study={"sampler": "grid", "n_trials": 2}, search_space={"model.hidden": [4, 16]},
                               overrides={"model.fail_if_hidden": 16, "trainer.max_epochs": 1}))
    assert _sweep(spec.path) == 0
    capsys.readouterr()
    (spec.output_dir / "results.csv").unlink()
    assert _sweep(spec.path, "--status") == 0
    out = capsys.readouterr().out
    assert "| FAIL |" in out and "| COMPLETE |" in out
    assert (spec.output_dir / "results.csv").is_file()

    # The failure was in the config, not the code: fix it and re-run only the failed trial.
    fixed = load_spec(toy_sweep(study={"sampler": "grid", "n_trials": 2}, search_space={"model.hidden": [4, 16]},
                                overrides={"model.fail_if_hidden": 99, "trainer.max_epochs": 1}))
    assert _sweep(fixed.path) != 0  # a changed config under a study is refused ...
    assert "model.fail_if_hidden: 16 then, 99 now" in capsys.readouterr().err
    assert _sweep(fixed.path, "--retry-failed") == 0  # ... unless it is the fix of failed trials
    assert "--retry-failed: the retried and new trials train with the new values" in capsys.readouterr().err
    trials = study_trials(fixed)
    assert len(trials) == 3 and trials[2].state == TrialState.COMPLETE
    assert trials[2].params == {"model.hidden": 16} and trials[2].user_attrs["retry_of"] in (0, 1)
