"""Sweeps on a real SLURM (scripts/slurm/local_cluster.sh): a job array whose results match a local run, requeue
after the time-limit signal, scancel of one array task. Skipped with the reason when that SLURM is not running."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml
from optuna.trial import TrialState

from terramind_ft import cli
from terramind_ft.sweep.launch import PREEMPT_CHECKPOINT, submit_workers
from terramind_ft.sweep.search import open_study
from terramind_ft.sweep.spec import load_spec

from slurm_helpers import job_state, start_requeued_job_now, wait_for
from sweep_helpers import result_rows, study_trials

pytestmark = [pytest.mark.slurm, pytest.mark.slow,
              pytest.mark.usefixtures("slurm_cluster", "slurm_jobs_cancelled_after")]


def _slurm(**slurm):
    return {"cluster": "slurm", "timeout_min": 15, "cpus_per_trial": 1,
            "slurm": {"array_parallelism": 2, "signal_delay_s": 30, **slurm}}


def test_sweep_runs_as_a_job_array_and_matches_a_local_run(toy_sweep):
    local = load_spec(toy_sweep("local.yaml", output_dir="out_local", overrides={"trainer.max_epochs": 1}))
    assert cli.main(["sweep", "--config", str(local.path), "--skip-check"]) == 0
    spec = load_spec(toy_sweep("slurm.yaml", output_dir="out_slurm", overrides={"trainer.max_epochs": 1},
                               launcher=_slurm()))
    assert cli.main(["sweep", "--config", str(spec.path), "--wait", "--skip-check"]) == 0

    jobs = {t.user_attrs["worker"]["job"] for t in study_trials(spec)}
    assert all("_" in str(j) for j in jobs)  # array tasks (<array id>_<index>)
    assert len({str(j).split("_")[0] for j in jobs}) == 1  # of one array
    assert [t.state for t in study_trials(spec)] == [TrialState.COMPLETE] * 3

    def table(s):
        return sorted((r["optimizer.init_args.lr"], r["model.hidden"], round(float(r["val/score"]), 6))
                      for r in result_rows(s))

    assert table(spec) == table(local)  # the same trials and scores as on this machine
    best_local = yaml.safe_load((local.output_dir / "best.yaml").read_text())
    best_slurm = yaml.safe_load((spec.output_dir / "best.yaml").read_text())
    assert best_slurm["optimizer"] == best_local["optimizer"] and best_slurm["model"] == best_local["model"]


def test_the_time_limit_signal_requeues_and_the_trial_resumes(toy_sweep):
    """SLURM's pre-timeout USR2 (sent here with scancel): the worker saves preempted.ckpt, submitit requeues the
    array task, and the trial resumes from that checkpoint; nothing is run twice."""
    spec = load_spec(toy_sweep(study={"n_trials": 1}, launcher=_slurm(),
                               overrides={"trainer.max_epochs": 2, "model.step_sleep_s": 0.5}))
    open_study(spec, create=True)
    [job] = submit_workers(spec, work=1)
    run_dir = spec.trials_dir / "trial_0000"
    wait_for(lambda: (run_dir / "checkpoints" / "last.ckpt").exists(), 180, "the first epoch")
    subprocess.run(["scancel", "--signal=USR2", str(job.job_id)], check=True)
    start_requeued_job_now(str(job.job_id))
    job.result()  # waits through the requeue (sacct) until the requeued task finished
    trials = study_trials(spec)
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE], job.stderr()
    retry = trials[1]
    assert retry.user_attrs["retry_of"] == 0 and retry.user_attrs["run_dir"] == str(run_dir)
    assert retry.user_attrs["resumed_from"] in (str(run_dir / PREEMPT_CHECKPOINT),
                                                str(run_dir / "checkpoints" / "last.ckpt"))
    starts = (run_dir / "fit_starts.txt").read_text().split()
    assert starts[0] == "0" and len(starts) == 2 and int(starts[1]) >= 1, starts  # resumed, not restarted
    wait_for(lambda: job_state(str(job.job_id)) == "COMPLETED", 60, "SLURM to record the end of the job")
    history = subprocess.run(["sacct", "-n", "-D", "-X", "-P", "-o", "State", "-j", str(job.job_id)],
                             capture_output=True, text=True).stdout.split()
    assert history == ["REQUEUED", "COMPLETED"], history  # SLURM requeued the task once, then it finished


def test_scancel_of_one_array_task_is_requeued_by_the_next_run(toy_sweep):
    spec = load_spec(toy_sweep(study={"n_trials": 2}, launcher=_slurm(),
                               overrides={"trainer.max_epochs": 2, "model.step_sleep_s": 0.5}))
    assert cli.main(["sweep", "--config", str(spec.path), "--skip-check"]) == 0  # slurm: submit, do not wait
    study = open_study(spec, create=False)
    wait_for(lambda: any((spec.trials_dir / f"trial_{i:04d}" / "checkpoints" / "last.ckpt").exists()
                          for i in range(2)), 180, "a trial's first epoch")
    running = [t for t in study.get_trials() if t.state == TrialState.RUNNING
               and (Path(t.user_attrs["run_dir"]) / "checkpoints" / "last.ckpt").exists()]
    victim = running[0]
    job = str(victim.user_attrs["worker"]["job"])
    subprocess.run(["scancel", job], check=True)
    wait_for(lambda: job_state(job).startswith("CANCELLED"), 60, f"scancel of {job}")
    wait_for(lambda: not any(job_state(str(t.user_attrs["worker"]["job"])) in ("RUNNING", "PENDING")
                              for t in open_study(spec, create=False).get_trials()), 240, "the other task")

    assert cli.main(["sweep", "--config", str(spec.path), "--wait", "--skip-check"]) == 0
    trials = study_trials(spec)
    completed = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(completed) == 2  # both trials of the budget, each once
    assert len({t.user_attrs["run_dir"] for t in completed}) == 2
    again = [t for t in completed if t.user_attrs.get("retry_of") == victim.number]
    assert len(again) == 1 and again[0].user_attrs["run_dir"] == victim.user_attrs["run_dir"]
    starts = (Path(victim.user_attrs["run_dir"]) / "fit_starts.txt").read_text().split()
    assert len(starts) == 2 and int(starts[1]) >= 1, starts  # the re-queued trial resumed from its checkpoint
