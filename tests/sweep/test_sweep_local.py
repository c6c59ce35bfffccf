"""Local executor (real subprocess workers): a preempted worker is requeued and its trial resumes."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest
from optuna.trial import TrialState

from terramind_ft.sweep.launch import PREEMPT_CHECKPOINT, submit_workers
from terramind_ft.sweep.search import HEARTBEAT_FILE, open_study
from terramind_ft.sweep.spec import load_spec


def _wait_for(condition, timeout_s: float, what: str) -> None:
    end = time.time() + timeout_s
    while not condition():
        if time.time() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.mark.slow  # two worker processes start (imports dominate: ~20 s idle, ~60 s on a busy 2-core box)
def test_preempted_worker_is_requeued_and_trial_resumes(toy_sweep):
    # 2 epochs of 4 slow steps: the signal lands while epoch 1 runs (after epoch 0's last.ckpt).
    spec = load_spec(toy_sweep(study={"n_trials": 1}, launcher={"cluster": "local", "timeout_min": 30},
                               overrides={"trainer.max_epochs": 2, "model.step_sleep_s": 0.4}))
    open_study(spec, create=True)
    [job] = submit_workers(spec, work=1)
    run_dir = spec.trials_dir / "trial_0000"
    _wait_for(lambda: (run_dir / "checkpoints" / "last.ckpt").exists() or job.done(), 240, "the first epoch")
    assert not job.done(), job.stderr()
    # SLURM sends USR2 to the job's tasks before a time limit or on preemption; do the same to the worker.
    worker_pid = json.loads((run_dir / HEARTBEAT_FILE).read_text())["pid"]
    os.kill(worker_pid, signal.SIGUSR2)

    summary = job.result()  # the controller restarts the requeued worker, which finishes the trial
    trials = sorted(open_study(spec, create=False).get_trials(), key=lambda t: t.number)
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE], job.stderr()
    retry = trials[1]
    assert retry.user_attrs["retry_of"] == 0
    assert retry.user_attrs["run_dir"] == str(run_dir)
    assert summary["trials"] == [1]  # the requeued worker ran the retry (a fresh process: new pid)
    assert summary["pid"] != worker_pid
    resumed_from = retry.user_attrs["resumed_from"]
    assert resumed_from in (str(run_dir / PREEMPT_CHECKPOINT), str(run_dir / "checkpoints" / "last.ckpt"))
    starts = (run_dir / "fit_starts.txt").read_text().split()
    assert starts[0] == "0" and len(starts) == 2 and int(starts[1]) >= 1, starts  # resumed, not restarted
    assert "preempted" in (job.stderr() or "") + (job.stdout() or "")
