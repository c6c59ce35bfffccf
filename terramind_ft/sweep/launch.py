"""Launching a sweep: submitit executors (local, slurm, debug), the worker loop and one trial.

The driver (:func:`run_sweep`) opens the study, re-enqueues trials of dead workers and submits
``workers`` jobs; every job runs :class:`SweepWorker`, which asks the shared Optuna storage for trials
until the budget is spent. There is no scheduler of ours: Optuna hands out trials, submitit starts and
requeues jobs, Lightning checkpoints carry a trial across a requeue.

* ``local``: one subprocess per worker on this machine, each pinned to its own GPU(s) (submitit's local
  executor starts every job at once, so there are exactly ``workers`` jobs).
* ``slurm``: one job array (``--array=0-N%parallelism``), one worker per array task.
* ``debug``: the workers run one after the other inside this process (tests, breakpoints).

Preemption and time limits: SLURM (or the local executor) sends USR2 ``signal_delay_s`` before the end;
submitit then calls :meth:`SweepWorker.checkpoint`, which saves a checkpoint of the running trial and
returns the worker to requeue. The requeued worker re-enqueues its interrupted trial with the same run
folder and resumes it from there. Lightning's own SLURM auto-requeue is switched off in the trials so that
submitit is the only requeue owner.
"""

from __future__ import annotations

import contextlib
import gc
import io
import json
import logging
import math
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import submitit
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import TrialState

from terramind_ft.errors import ConfigError
from terramind_ft.io import atomic_path, atomic_write_text
from terramind_ft.sweep.results import write_results, write_trial_config
from terramind_ft.sweep.search import (
    Heartbeat,
    TrialMetricCallback,
    open_study,
    recover_stale_trials,
    recover_trial,
    remaining_work,
    retry_failed_trials,
    superseded,
    trial_values,
    worker_identity,
)
from terramind_ft.sweep.spec import (
    SweepSpec,
    check_against_cli,
    cli_argv,
    configure_logging,
    load_callable,
    override_args,
)

log = logging.getLogger(__name__)

PREEMPT_CHECKPOINT = "preempted.ckpt"
METRICS_FILE = "metrics.json"
# The trial running in this process, for SweepWorker.checkpoint (called from submitit's signal handler).
_ACTIVE: dict[str, Any] = {}


# --------------------------------------------------------------------------------------------------------
# One trial


class _Tee(io.TextIOBase):
    """Writes to a stream and keeps a copy (the parser's error message must reach the trial record)."""

    def __init__(self, stream: Any):
        self.stream = stream
        self.copy = io.StringIO()

    def write(self, text: str) -> int:
        self.copy.write(text)
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()


def build_trial_cli(spec: SweepSpec, values: dict[str, Any], run_dir: Path) -> Any:
    """``build_cli(["fit", "--config", base, --key=value..., --trainer.default_root_dir=run_dir], run=False)``."""
    build = load_callable(spec.cli)
    args = ["fit", "--config", str(spec.base_config), *override_args(values),
            f"--trainer.default_root_dir={run_dir}"]
    tee = _Tee(sys.stderr)
    try:
        with contextlib.redirect_stderr(tee), cli_argv():
            return build(args, run=False)
    except SystemExit as exc:  # jsonargparse exits on a parse error; a trial must fail, not end the worker
        text = tee.copy.getvalue().strip()
        message = text[text.rfind("error:"):] if "error:" in text else text[-2000:]
        raise ConfigError(f"the trial's config does not parse ({message or f'exit code {exc.code}'}); "
                          f"arguments: {' '.join(args[1:])}") from None


def find_resume_checkpoint(run_dir: Path) -> Path | None:
    """The newest ``last*.ckpt`` or preemption checkpoint under a trial's run folder, if any."""
    candidates = [p for p in Path(run_dir).rglob("*.ckpt")
                  if p.name.startswith("last") or p.name == PREEMPT_CHECKPOINT]
    return max(candidates, key=lambda p: p.stat().st_mtime) if candidates else None


def _hand_requeue_to_submitit(trainer: Any) -> None:
    """Switch off Lightning's SLURM auto-requeue: submitit owns the requeue (one owner, see module doc)."""
    from lightning.fabric.plugins.environments import SLURMEnvironment

    env = getattr(trainer.strategy, "cluster_environment", None)
    if env is None:
        env = getattr(getattr(trainer, "_accelerator_connector", None), "cluster_environment", None)
    if isinstance(env, SLURMEnvironment):
        env.auto_requeue = False


def _write_metrics(run_dir: Path, record: dict[str, Any]) -> None:
    """Add the sweep's record to ``<run_dir>/metrics.json`` (keeping what the run itself wrote there)."""
    path = Path(run_dir) / METRICS_FILE
    data: dict[str, Any] = {}
    if path.exists():
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            data = {}
    data = data if isinstance(data, dict) else {"run": data}
    data["sweep"] = record
    atomic_write_text(path, json.dumps(data, indent=2, default=str))


def run_trial(spec: SweepSpec, trial: optuna.Trial) -> float:
    """Train one trial and return its objective value (best or last epoch value of ``study.metric``)."""
    params = trial_values(spec, trial)
    values = {**spec.overrides, **params}
    run_dir = Path(trial.user_attrs.get("run_dir") or spec.trials_dir / f"trial_{trial.number:04d}")
    run_dir.mkdir(parents=True, exist_ok=True)
    trial.set_user_attr("run_dir", str(run_dir))
    trial.set_user_attr("worker", worker_identity())
    resume = find_resume_checkpoint(run_dir)
    if resume is not None:
        trial.set_user_attr("resumed_from", str(resume))
        log.info("trial %d resumes from %s", trial.number, resume)
    record: dict[str, Any] = {"trial": trial.number, "metric": spec.study.metric, "params": params,
                              "overrides": spec.overrides, "resumed_from": str(resume) if resume else None}
    callback: TrialMetricCallback | None = None
    started = time.time()
    try:
        write_trial_config(spec, trial.number, values, run_dir)
        with Heartbeat(run_dir, spec.study.heartbeat_s):
            cli = build_trial_cli(spec, values, run_dir)
            trainer = cli.trainer
            _hand_requeue_to_submitit(trainer)
            callback = TrialMetricCallback(trial, spec.study.metric, spec.study.direction, run_dir,
                                           prune=spec.study.pruner != "none")
            trainer.callbacks.append(callback)
            _ACTIVE.update(trainer=trainer, run_dir=run_dir, number=trial.number)
            try:
                trainer.fit(cli.model, datamodule=cli.datamodule, ckpt_path=str(resume) if resume else None)
            finally:
                _ACTIVE.clear()
                del cli, trainer
        value = callback.objective_value(spec.study.objective)
        if not math.isfinite(value):
            raise FloatingPointError(f"{spec.study.metric} is {value} in every validation epoch")
    except optuna.TrialPruned as exc:
        _write_metrics(run_dir, {**record, "state": "PRUNED", "reason": str(exc), "seconds": time.time() - started,
                                 "history": callback.history if callback else {}})
        raise
    except Exception as exc:
        message = f"{type(exc).__name__}: {exc}"
        with contextlib.suppress(Exception):
            trial.set_user_attr("error", message[:2000])
        (run_dir / "error.txt").write_text(traceback.format_exc())
        _write_metrics(run_dir, {**record, "state": "FAIL", "error": message, "seconds": time.time() - started,
                                 "history": callback.history if callback else {}})
        raise
    _write_metrics(run_dir, {**record, "state": "COMPLETE", "value": value, "objective": spec.study.objective,
                             "history": callback.history, "last_metrics": callback.last_metrics,
                             "seconds": time.time() - started})
    return value


# --------------------------------------------------------------------------------------------------------
# The worker


def _default_trials_per_worker(spec: SweepSpec) -> int | None:
    if spec.launcher.trials_per_worker is not None:
        return spec.launcher.trials_per_worker
    # On SLURM one trial per array task keeps #SBATCH --time a per-trial limit.
    return 1 if spec.launcher.cluster == "slurm" else None


class SweepWorker(submitit.helpers.Checkpointable):
    """A submitit job: run trials from the shared study until the budget (or ``trials_per_worker``) is spent.

    ``resume_trial`` is set when submitit requeues the worker after a preemption or time limit: the
    interrupted trial is enqueued again with its run folder and resumes from its checkpoint.
    """

    def __init__(self, spec: SweepSpec, index: int = 0, resume_trial: int | None = None):
        self.spec = spec
        self.index = index
        self.resume_trial = resume_trial
        self.current_trial: int | None = None

    def __call__(self) -> dict[str, Any]:
        spec = self.spec
        configure_logging()
        if os.environ.get("SUBMITIT_LOCAL_JOB_ID"):
            die_with_parent()  # a local worker must not outlive the `terramind-ft sweep` that started it
        study = open_study(spec, create=False, parallel=True, worker_index=self.index)
        if self.resume_trial is not None:
            recover_trial(study, self.resume_trial, "its worker was preempted or timed out and requeued")
            self.resume_trial = None
        limit = _default_trials_per_worker(spec)
        ran: list[int] = []
        while limit is None or len(ran) < limit:
            recover_stale_trials(spec, study)
            if remaining_work(spec, study) <= 0:
                break
            started = None
            try:
                study.optimize(self._objective, n_trials=1, catch=(Exception,), gc_after_trial=True)
            except UpdateFinishedTrialError as exc:
                # Another process declared this trial's worker dead (heartbeat too old) and re-ran it.
                log.warning("worker %d: trial %s was taken over by another worker: %s", self.index,
                            self.current_trial, exc)
            finally:
                started, self.current_trial = self.current_trial, None
                if started is not None:
                    ran.append(started)
                _release_memory()
            if started is None:  # no trial reached the objective (the sampler stopped the study)
                break
            with contextlib.suppress(Exception):
                write_results(spec, study)
        return {"worker": self.index, "trials": ran, **worker_identity()}

    def _objective(self, trial: optuna.Trial) -> float:
        self.current_trial = trial.number
        try:
            return run_trial(self.spec, trial)
        except KeyboardInterrupt:
            # Optuna records a KeyboardInterrupt as FAIL; leave the trial RUNNING with its heartbeat marked
            # stopped instead, so that the next `terramind-ft sweep` resumes it (as after a SystemExit).
            raise SystemExit(130) from None

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
        """Called by submitit on preemption / time limit: save the running trial, requeue this worker."""
        active = dict(_ACTIVE)
        trainer = active.get("trainer")
        if trainer is not None and getattr(trainer, "world_size", 1) == 1:
            # Mid-epoch state, so that a long epoch is not lost (Lightning's own SLURM requeue does the same).
            path = Path(active["run_dir"]) / PREEMPT_CHECKPOINT
            try:
                with atomic_path(path, suffix=".ckpt") as tmp:
                    trainer.save_checkpoint(tmp, weights_only=False)
            except Exception as exc:  # the last epoch's last.ckpt is still there to resume from
                log.warning("could not save %s on preemption: %s", path, exc)
        resume = self.current_trial if self.current_trial is not None else active.get("number")
        return submitit.helpers.DelayedSubmission(SweepWorker(self.spec, self.index, resume_trial=resume),
                                                  *args, **kwargs)


def die_with_parent(poll_s: float = 1.0, parent: int | None = None) -> threading.Thread:
    """Send this process SIGTERM when its parent (the local launcher) is gone, killed with SIGKILL included.

    Local workers are children of ``terramind-ft sweep``; when it dies they are re-parented and would train on
    unseen. SIGTERM lets the trial stop between batches and save ``last.ckpt`` (Lightning's handler), and the
    heartbeat marks it stopped, so the next ``terramind-ft sweep`` resumes it at once. ``parent``: the
    launcher's PID when known (default: the parent now).
    """
    parent = os.getppid() if parent is None else parent

    def watch() -> None:
        while True:
            time.sleep(poll_s)
            if os.getppid() != parent:
                log.warning("the sweep launcher (PID %d) is gone: stopping this worker", parent)
                os.kill(os.getpid(), signal.SIGTERM)
                return

    thread = threading.Thread(target=watch, name="sweep-launcher-watch", daemon=True)
    thread.start()
    return thread


def _release_memory() -> None:
    gc.collect()
    if "torch" in sys.modules:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()


# --------------------------------------------------------------------------------------------------------
# Executors


def _visible_gpus(spec: SweepSpec) -> list[int]:
    if spec.launcher.gpus is not None:
        return list(spec.launcher.gpus)
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        ids = [s.strip() for s in env.split(",") if s.strip()]
        if all(s.isdigit() for s in ids):
            return [int(s) for s in ids]
        raise ConfigError(f"CUDA_VISIBLE_DEVICES={env!r} does not list GPU numbers; give them as launcher.gpus",
                          key="launcher.gpus")
    import torch

    return list(range(torch.cuda.device_count()))


def plan_workers(spec: SweepSpec, work: int) -> list[dict[str, Any]]:
    """One entry per job to submit: its index and (local) the GPUs it sees."""
    launcher = spec.launcher
    if launcher.cluster == "debug":
        return [{"index": 0}]
    if launcher.cluster == "slurm":
        n = launcher.workers or spec.budget
        return [{"index": i} for i in range(max(1, min(n, work)))]
    if launcher.gpus_per_trial == 0:
        return [{"index": i, "gpus": ()} for i in range(max(1, min(launcher.workers or 1, work)))]
    gpus = _visible_gpus(spec)
    if not gpus:
        log.warning("launcher.gpus_per_trial is 1 but this machine shows no GPU: one worker, on the CPU")
        return [{"index": 0, "gpus": ()}]
    n = max(1, min(launcher.workers or len(gpus), work))
    if n > len(gpus):
        log.warning("%d workers share GPUs %s", n, gpus)
    return [{"index": i, "gpus": (gpus[i % len(gpus)],)} for i in range(n)]


def make_executor(spec: SweepSpec) -> submitit.Executor:
    launcher = spec.launcher
    folder = spec.output_dir / "submitit" / "%j"
    if launcher.cluster == "debug":
        return submitit.DebugExecutor(folder)
    if launcher.cluster == "local":
        ex = submitit.LocalExecutor(folder, max_num_timeout=launcher.max_timeouts, python=launcher.python)
        ex.update_parameters(timeout_min=launcher.timeout_min or 30 * 24 * 60, setup=list(launcher.setup),
                             signal_delay_s=launcher.slurm.signal_delay_s)
        return ex
    ex = submitit.SlurmExecutor(folder, max_num_timeout=launcher.max_timeouts, python=launcher.python)
    slurm = launcher.slurm
    params: dict[str, Any] = dict(
        job_name=f"sweep-{spec.study.name}",
        time=launcher.timeout_min,
        nodes=1,
        ntasks_per_node=1,
        signal_delay_s=slurm.signal_delay_s,
        setup=list(launcher.setup),
        array_parallelism=slurm.array_parallelism or 256,
    )
    optional = dict(partition=slurm.partition, account=slurm.account, qos=slurm.qos, constraint=slurm.constraint,
                    cpus_per_task=launcher.cpus_per_trial,
                    gpus_per_node=launcher.gpus_per_trial or None,
                    mem=None if launcher.mem_gb is None else f"{launcher.mem_gb:g}GB",
                    additional_parameters=dict(slurm.extra_sbatch) or None)
    params.update({k: v for k, v in optional.items() if v is not None})
    ex.update_parameters(**params)
    return ex


def submit_workers(spec: SweepSpec, work: int) -> list[submitit.Job]:
    executor = make_executor(spec)
    plan = plan_workers(spec, work)
    # Submitting from inside a SLURM job must not leak that job's SLURM_*/RANK variables into the new jobs.
    with submitit.helpers.clean_env():
        if spec.launcher.cluster == "local":
            jobs = []
            for entry in plan:
                executor.update_parameters(gpus_per_node=len(entry["gpus"]), visible_gpus=entry["gpus"])
                jobs.append(executor.submit(SweepWorker(spec, entry["index"])))
            return jobs
        with executor.batch():
            pending = [executor.submit(SweepWorker(spec, entry["index"])) for entry in plan]
    return list(pending)


# --------------------------------------------------------------------------------------------------------
# The driver


def _counts(spec: SweepSpec, study: optuna.Study) -> dict[str, int]:
    trials = study.get_trials(deepcopy=False)
    gone = superseded(trials)
    out: dict[str, int] = {}
    for t in trials:
        if t.number not in gone:
            out[t.state.name] = out.get(t.state.name, 0) + 1
    return out


def _wait(spec: SweepSpec, study: optuna.Study, jobs: list[submitit.Job], say: Callable[[str], None]) -> list[str]:
    """Wait for the jobs with a progress bar over finished trials; return one error line per crashed job."""
    from tqdm import tqdm

    errors: list[str] = []
    if spec.launcher.cluster == "debug":
        for job in jobs:  # the debug executor runs the job inside result()
            try:
                job.result()
            except SystemExit:  # Lightning turns Ctrl-C into sys.exit(1) after its graceful shutdown
                raise KeyboardInterrupt from None
            except Exception as exc:
                errors.append(f"worker {job.job_id}: {type(exc).__name__}: {exc}")
        return errors
    finished = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    start = sum(_counts(spec, study).get(s.name, 0) for s in finished)
    with tqdm(total=spec.budget, initial=start, desc=f"sweep {spec.study.name}", unit="trial") as bar:
        while True:
            done = sum(_counts(spec, study).get(s.name, 0) for s in finished)
            bar.update(max(0, done - bar.n))
            if all(job.done() for job in jobs):
                break
            time.sleep(2.0)
    for job in jobs:
        exc = job.exception()
        if exc is not None:
            errors.append(f"worker job {job.job_id} failed: {str(exc).strip().splitlines()[-1] if str(exc) else exc!r}"
                          f" (log: {job.paths.stderr})")
    return errors


def run_sweep(spec: SweepSpec, wait: bool | None = None, retry_failed: bool = False, check: bool = True,
              say: Callable[[str], None] = print) -> int:
    """Validate, (re)start the study and run it to the end; returns the command's exit code."""
    if check:
        check_against_cli(spec, progress=say)
    study = open_study(spec, create=True, parallel=True, accept_config_change=retry_failed)
    recovered = recover_stale_trials(spec, study)
    if recovered:
        say(f"trials {recovered} lost their worker; they are enqueued again and resume from their run folders")
    if retry_failed:
        again = retry_failed_trials(study)
        say(f"--retry-failed: trials {again} enqueued again" if again else "--retry-failed: no failed trial")
    work = remaining_work(spec, study)
    counts = _counts(spec, study)
    say(f"study {spec.study.name!r} in {spec.study.storage}: {sum(counts.values())} trial(s) so far {counts}, "
        f"{work} to run, launcher {spec.launcher.cluster}")
    if work <= 0:
        running = counts.get("RUNNING", 0)
        say("nothing left to start" + (f"; {running} trial(s) still running elsewhere" if running else ""))
        return _finish(spec, study, say, [])
    jobs = submit_workers(spec, work)
    say(f"submitted {len(jobs)} worker job(s): {', '.join(str(j.job_id) for j in jobs)}; logs in "
        f"{spec.output_dir / 'submitit'}")
    if wait is None:
        wait = spec.launcher.cluster != "slurm"
    if not wait:
        say(f"follow it with: terramind-ft sweep --status --config {spec.path}")
        return 0
    try:
        errors = _wait(spec, study, jobs, say)
    except KeyboardInterrupt:
        if spec.launcher.cluster == "slurm":
            say(f"stopped waiting; the jobs keep running (scancel {jobs[0].job_id.split('_')[0]} stops them)")
            return 130
        if spec.launcher.cluster == "local":
            _stop_local_workers(spec, study, jobs)
        say("interrupted: re-run the same command to continue; running trials resume from their last checkpoint")
        with contextlib.suppress(Exception):
            write_results(spec, study)
        return 130
    return _finish(spec, study, say, errors)


def _stop_local_workers(spec: SweepSpec, study: optuna.Study, jobs: list[submitit.Job]) -> None:
    """Stop our worker processes and mark their trials' heartbeats stopped, so the next run resumes them at
    once (a worker killed before it could say so would otherwise wait for ``stale_after_s``)."""
    for job in jobs:
        with contextlib.suppress(Exception):
            job.cancel()
    end = time.time() + 10
    while time.time() < end and not all(job.done() for job in jobs):
        time.sleep(0.2)
    ours = {str(job.job_id) for job in jobs}
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        run_dir = t.user_attrs.get("run_dir")
        if run_dir and str(t.user_attrs.get("worker", {}).get("job")) in ours:
            with contextlib.suppress(OSError):
                Heartbeat(Path(run_dir), spec.study.heartbeat_s).beat(stopped=True)


def _finish(spec: SweepSpec, study: optuna.Study, say: Callable[[str], None], errors: list[str]) -> int:
    results = write_results(spec, study)
    say(results.markdown)
    say(f"results: {results.csv_path}, {results.markdown_path}"
        + (f"; best config: {results.best_path}" if results.best_path else ""))
    for line in errors:
        say(line)
    if results.best_trial is None:
        say("no trial completed")
        return 1
    return 1 if errors else 0


def show_status(spec: SweepSpec, say: Callable[[str], None] = print) -> int:
    """Write and print the results of the study as it is now (nothing is started or changed)."""
    study = open_study(spec, create=False)
    results = write_results(spec, study)
    say(results.markdown)
    counts = _counts(spec, study)
    say(f"{counts}; {remaining_work(spec, study)} trial(s) not started; results: {results.csv_path}"
        + (f"; best config: {results.best_path}" if results.best_path else ""))
    return 0
