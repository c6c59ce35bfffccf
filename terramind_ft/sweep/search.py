"""The Optuna side of a sweep: storage, study, sampler, pruner, YAML search space -> ``trial.suggest_*``,
the per-epoch metric/pruning callback, and the recovery of trials whose worker died.

Optuna is the result store: every worker opens the same storage (a journal file on a shared filesystem by
default, or an RDB URL) and asks it for the next trial. A trial's run folder is a user attribute
(``run_dir``), so a trial that is re-run after its worker died is *enqueued with the same parameters and the
same folder* and resumes from the folder's ``last.ckpt``; the re-run points back with ``retry_of``.

The journal storage has no heartbeat (only Optuna's RDB storage has one), so the sweep keeps its own, the
same for every storage: while a trial runs, its worker touches ``<run_dir>/heartbeat`` every
``study.heartbeat_s``; a RUNNING trial whose heartbeat is older than ``study.stale_after_s`` (or that was
stopped by Ctrl-C or a signal) belongs to a dead worker.
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import socket
import threading
import time
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import optuna
from lightning.pytorch.callbacks import Callback
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState

from terramind_ft.errors import ConfigError, TerraMindFTError, did_you_mean
from terramind_ft.registry import check_kwargs
from terramind_ft.sweep.spec import Distribution, SweepSpec
from terramind_ft.io import atomic_path, atomic_write_json

log = logging.getLogger(__name__)

HEARTBEAT_FILE = "heartbeat"
METRIC_HISTORY_FILE = "metric_history.json"
STUDY_ATTR_SPACE = "terramind_ft:search_space"
STUDY_ATTR_METRIC = "terramind_ft:metric"
STUDY_ATTR_BASE = "terramind_ft:base_config"
# Keys of the training config that say how a trial runs, not what it computes: they may change between runs of
# one study (more loader workers on the cluster, no progress bar in batch jobs).
RUN_ONLY_KEYS = ("data.init_args.num_workers", "data.init_args.pin_memory", "data.init_args.persistent_workers",
                 "trainer.enable_progress_bar", "trainer.enable_model_summary", "trainer.log_every_n_steps")
PRIMITIVES = (type(None), bool, int, float, str)


class MetricNotLoggedError(TerraMindFTError, KeyError):
    """The sweep metric never appeared in ``trainer.callback_metrics``."""

    def __str__(self) -> str:
        return self.args[0]


# --------------------------------------------------------------------------------------------------------
# Storage, sampler, pruner, study


def build_storage(spec: SweepSpec) -> optuna.storages.BaseStorage:
    """A journal file (one file on a shared filesystem, NFS-safe lock) or an RDB storage from a URL."""
    study = spec.study
    if study.storage_is_url:
        return optuna.storages.RDBStorage(study.storage, engine_kwargs={"pool_pre_ping": True})
    from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock, JournalFileSymlinkLock

    path = Path(study.storage)
    path.parent.mkdir(parents=True, exist_ok=True)
    # fcntl locks are unreliable on NFS; the open(O_EXCL) lock works on NFSv3+, the symlink lock on older NFS.
    lock_cls = JournalFileOpenLock if study.journal_lock == "open" else JournalFileSymlinkLock
    repair_journal(path, lock_cls(str(path)))
    return optuna.storages.JournalStorage(JournalFileBackend(str(path), lock_obj=lock_cls(str(path))))


def _parse_record(line: bytes) -> tuple[bytes | None, bytes]:
    """(the record a journal line holds or None, the bytes that are not a record). A line that a killed writer
    tore and a later append completed holds ``<fragment><whole record>``: the record is kept."""
    body = line.rstrip(b"\n")
    if not line.endswith(b"\n"):
        return None, line
    try:
        json.loads(body)
        return line, b""
    except ValueError:
        pass
    start = body.rfind(b'{"op_code"')
    while start > 0:
        try:
            json.loads(body[start:])
            return body[start:] + b"\n", body[:start]
        except ValueError:
            start = body.rfind(b'{"op_code"', 0, start)
    return None, line


def repair_journal(path: Path, lock: Any) -> int:
    """Drop torn records from an Optuna journal file; returns the number of records kept (0 for no file).

    A writer killed mid-append leaves a line without its end; the next append is glued onto it and Optuna then
    refuses the whole study with a bare ``JSONDecodeError``, forever. Every whole record is kept (also one glued
    behind a fragment); the torn bytes go to ``<journal>.corrupt-<time>`` beside it, and a notice says how many
    records were kept. Runs under the journal's own lock, so no writer appends meanwhile.
    """
    if not path.is_file() or path.stat().st_size == 0:
        return 0
    if not lock.acquire():
        return 0
    try:
        data = path.read_bytes()
        kept: list[bytes] = []
        torn: list[bytes] = []
        for line in data.splitlines(keepends=True):
            if not line.strip():
                continue
            record, rest = _parse_record(line)
            if record is not None:
                kept.append(record)
            if rest:
                torn.append(rest)
        if not torn:
            return len(kept)
        backup = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
        backup.write_bytes(b"\n".join(torn) + b"\n")
        with atomic_path(path, suffix=".journal") as tmp:
            tmp.write_bytes(b"".join(kept))
        log.warning("notice: sweep journal %s held %d torn record(s) (a killed writer): kept %d record(s), moved "
                    "the torn bytes to %s", path, len(torn), len(kept), backup)
        return len(kept)
    finally:
        lock.release()


class TrialSeededRandomSampler(optuna.samplers.BaseSampler):
    """Random search whose draws depend on (seed, trial number, parameter name) only: trial N gets the same
    values whichever worker asks for it and whenever, so a sweep on 8 SLURM array tasks proposes exactly what
    the same sweep proposes on one machine (Optuna's RandomSampler draws from one stream per process)."""

    def __init__(self, seed: int):
        self.seed = int(seed)

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, Any]:
        return {}

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, Any]) -> dict[str, Any]:
        return {}

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: optuna.distributions.BaseDistribution) -> Any:
        import zlib

        import numpy as np

        rng = np.random.default_rng([self.seed, trial.number, zlib.crc32(param_name.encode())])
        d = param_distribution
        if isinstance(d, optuna.distributions.CategoricalDistribution):
            return d.choices[int(rng.integers(len(d.choices)))]
        if isinstance(d, optuna.distributions.FloatDistribution):
            if d.log:
                return float(math.exp(rng.uniform(math.log(d.low), math.log(d.high))))
            if d.step is not None:
                return float(d.low + d.step * int(rng.integers(int(round((d.high - d.low) / d.step)) + 1)))
            return float(rng.uniform(d.low, d.high))
        if isinstance(d, optuna.distributions.IntDistribution):
            if d.log:
                value = math.exp(rng.uniform(math.log(d.low - 0.5), math.log(d.high + 0.5)))
                return int(min(max(round(value), d.low), d.high))
            return int(d.low + d.step * int(rng.integers((d.high - d.low) // d.step + 1)))
        raise TypeError(f"no random draw for {type(d).__name__} ({param_name})")


def build_sampler(spec: SweepSpec, parallel: bool = False, seed_offset: int = 0) -> optuna.samplers.BaseSampler:
    """The sampler; ``seed_offset`` keeps workers (and restarts) that share ``study.seed`` from drawing the
    same random points."""
    study = spec.study
    seed = None if study.seed is None else study.seed + seed_offset
    args = dict(study.sampler_args)
    key = "study.sampler"
    if study.sampler == "grid":
        check_kwargs(optuna.samplers.GridSampler, args, "the grid sampler", key=key)
        grid = {d.key: [encode_choice(v) if d.kind == "categorical" else v for v in d.grid()]
                for d in spec.search_space}
        return optuna.samplers.GridSampler(grid, seed=seed, **args)
    if study.sampler == "random":
        check_kwargs(optuna.samplers.RandomSampler, args, "the random sampler", key=key)
        if study.seed is not None and not args:
            return TrialSeededRandomSampler(study.seed)
        return optuna.samplers.RandomSampler(seed=seed, **args)
    check_kwargs(optuna.samplers.TPESampler, args, "the TPE sampler", key=key)
    # With several workers, the "constant liar" keeps TPE from proposing the same point to each of them.
    args.setdefault("constant_liar", parallel)
    return optuna.samplers.TPESampler(seed=seed, **args)


def build_pruner(spec: SweepSpec) -> optuna.pruners.BasePruner:
    study = spec.study
    cls = {
        "none": optuna.pruners.NopPruner,
        "median": optuna.pruners.MedianPruner,
        "hyperband": optuna.pruners.HyperbandPruner,
        "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
    }[study.pruner]
    check_kwargs(cls, study.pruner_args, f"the {study.pruner} pruner", key="study.pruner")
    return cls(**study.pruner_args)


def space_signature(spec: SweepSpec) -> str:
    return json.dumps({d.key: d.describe() for d in spec.search_space}, sort_keys=True)


def _changed_keys(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[str]:
    """The keys of two recorded signatures whose values differ (or that only one has), sorted."""
    return sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))


def _leaves(node: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(node, Mapping) or not node:
        return {prefix: node} if prefix else {}
    out: dict[str, Any] = {}
    for k, v in node.items():
        out.update(_leaves(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def base_signature(spec: SweepSpec) -> str:
    """What every trial of the study trains with besides the searched values: the base config file as written,
    with the sweep's fixed overrides, every leaf by dotted key (searched keys and :data:`RUN_ONLY_KEYS` left out).
    """
    from terramind_ft.sweep.spec import load_yaml

    leaves = _leaves(load_yaml(spec.base_config) or {})
    leaves.update(_leaves(spec.overrides))
    searched = [d.key for d in spec.search_space]
    kept = {k: v for k, v in leaves.items() if k not in RUN_ONLY_KEYS
            and not any(k == s or k.startswith(f"{s}.") for s in searched)}
    return json.dumps(kept, sort_keys=True, default=str)


def _check_base_config(spec: SweepSpec, study: optuna.Study, create: bool, accept_change: bool = False) -> None:
    """Refuse a rerun whose training config changed: its new trials would be ranked beside the old ones in one
    results table and one best.yaml, trained with other settings, and nothing would say so. ``accept_change``
    (``--retry-failed``: the config was fixed for the failed trials) takes the new config with a notice."""
    now = base_signature(spec)
    saved = study.user_attrs.get(STUDY_ATTR_BASE)
    if saved is None:
        if create:
            study.set_user_attr(STUDY_ATTR_BASE, now)
        return
    if saved == now:
        return
    before, after = json.loads(saved), json.loads(now)
    changed = _changed_keys(before, after)
    said = "; ".join(f"{k}: {before.get(k, '(unset)')!r} then, {after.get(k, '(unset)')!r} now" for k in changed[:6])
    said += f" and {len(changed) - 6} more" if len(changed) > 6 else ""
    if accept_change and create:
        log.warning("notice: the training config changed since study %r started (%s); --retry-failed: the retried "
                    "and new trials train with the new values, the finished ones keep theirs", spec.study.name, said)
        study.set_user_attr(STUDY_ATTR_BASE, now)
        return
    raise ConfigError(f"the training config changed since study {spec.study.name!r} started ({said}); its new "
                      "trials would be ranked beside trials trained the old way. Use a new study.name, or restore "
                      f"the old values in {spec.base_config} / overrides (after fixing what made trials fail: "
                      "--retry-failed takes the change)", key="base_config")


def open_study(spec: SweepSpec, create: bool = True, parallel: bool = False,
               storage: optuna.storages.BaseStorage | None = None, worker_index: int | None = None,
               accept_config_change: bool = False) -> optuna.Study:
    """Create the study or load it, refusing a study whose search space, metric or training config (base config
    and overrides; :func:`base_signature`) changed since.

    A worker (``worker_index`` given) seeds its sampler with ``study.seed`` + its index + the number of
    trials already in the study: reproducible for one worker from scratch, and no two workers or restarts
    replay the same random draws.
    """
    if not create and not spec.study.storage_is_url and not Path(spec.study.storage).exists():
        raise ConfigError(f"no sweep has run yet: {spec.study.storage} does not exist; start it with "
                          f"'terramind-ft sweep --config {spec.path}'", key="study.storage")
    storage = storage or build_storage(spec)
    kwargs = dict(study_name=spec.study.name, storage=storage, sampler=build_sampler(spec, parallel),
                  pruner=build_pruner(spec))
    if create:
        study = optuna.create_study(direction=spec.study.direction, load_if_exists=True, **kwargs)
    else:
        try:
            study = optuna.load_study(**kwargs)
        except KeyError:
            raise ConfigError(f"no study {spec.study.name!r} in {spec.study.storage}; run "
                              f"'terramind-ft sweep --config {spec.path}' to start it", key="study.name") from None
    if study.direction.name.lower() != spec.study.direction:
        raise ConfigError(f"the study in {spec.study.storage} was created with direction "
                          f"{study.direction.name.lower()}; use a new study.name to change it", key="study.direction")
    attrs = study.user_attrs
    signature = space_signature(spec)
    if STUDY_ATTR_SPACE not in attrs:
        if create:
            study.set_user_attr(STUDY_ATTR_SPACE, signature)
            study.set_user_attr(STUDY_ATTR_METRIC, spec.study.metric)
    else:
        if attrs[STUDY_ATTR_SPACE] != signature:
            changed = _changed_keys(json.loads(attrs[STUDY_ATTR_SPACE]), json.loads(signature))
            raise ConfigError(f"the search space changed since study {spec.study.name!r} started (keys: "
                              f"{', '.join(changed)}); trials of both spaces cannot share one study. Use a new "
                              "study.name, or restore the old space", key="search_space")
        if attrs.get(STUDY_ATTR_METRIC) != spec.study.metric:
            raise ConfigError(f"study {spec.study.name!r} optimises {attrs.get(STUDY_ATTR_METRIC)!r}; use a new "
                              "study.name to optimise another metric", key="study.metric")
    if create or worker_index is not None:  # a start or a worker; --status reads any study
        _check_base_config(spec, study, create, accept_config_change)
    if worker_index is not None and spec.study.seed is not None:
        offset = 7919 * worker_index + len(study.get_trials(deepcopy=False))
        study.sampler = build_sampler(spec, parallel, seed_offset=offset)
    return study


# --------------------------------------------------------------------------------------------------------
# Search space


def encode_choice(value: Any) -> Any:
    """Optuna stores only None/bool/int/float/str choices; lists and mappings travel as JSON text."""
    return value if isinstance(value, PRIMITIVES) else json.dumps(value, sort_keys=True)


def decode_param(dist: Distribution, value: Any) -> Any:
    """The config value of an Optuna parameter (undoing :func:`encode_choice`)."""
    if dist.kind != "categorical" or not isinstance(value, str):
        return value
    for choice in dist.choices:
        if encode_choice(choice) == value:
            return choice
    return value


def suggest(trial: optuna.Trial, dist: Distribution) -> Any:
    """Ask Optuna for this key's value in this trial; the parameter name is the dotted config key."""
    if dist.kind == "categorical":
        return decode_param(dist, trial.suggest_categorical(dist.key, [encode_choice(c) for c in dist.choices]))
    if dist.kind == "int":
        return trial.suggest_int(dist.key, int(dist.low), int(dist.high), step=int(dist.step or 1), log=dist.log)
    return trial.suggest_float(dist.key, dist.low, dist.high, step=dist.step, log=dist.log)


def trial_values(spec: SweepSpec, trial: optuna.Trial) -> dict[str, Any]:
    return {d.key: suggest(trial, d) for d in spec.search_space}


def config_params(spec: SweepSpec, frozen: FrozenTrial) -> dict[str, Any]:
    """The config values of a finished trial, in search-space order."""
    out = {}
    for d in spec.search_space:
        if d.key in frozen.params:
            out[d.key] = decode_param(d, frozen.params[d.key])
    return out


# --------------------------------------------------------------------------------------------------------
# Budget, heartbeat and recovery


def superseded(trials: list[FrozenTrial]) -> set[int]:
    """Numbers of trials that were re-run as another trial (``retry_of``)."""
    return {int(t.user_attrs["retry_of"]) for t in trials if "retry_of" in t.user_attrs}


def remaining_work(spec: SweepSpec, study: optuna.Study) -> int:
    """Trials still to start: enqueued retries plus new trials up to ``n_trials``.

    A trial that was retried counts once (through its retry); a trial that failed with an error counts
    (a sweep does not redo trials that fail; ``--retry-failed`` does).
    """
    trials = study.get_trials(deepcopy=False)
    gone = superseded(trials)
    logical = [t for t in trials if t.number not in gone]
    waiting = sum(t.state == TrialState.WAITING for t in logical)
    return waiting + max(0, spec.budget - len(logical))


def worker_identity() -> dict[str, Any]:
    job = os.environ.get("SLURM_ARRAY_JOB_ID")
    job = f"{job}_{os.environ['SLURM_ARRAY_TASK_ID']}" if job else os.environ.get("SLURM_JOB_ID")
    return {"host": socket.gethostname(), "pid": os.getpid(),
            "job": job or os.environ.get("SUBMITIT_LOCAL_JOB_ID") or os.environ.get("SUBMITIT_DEBUG_JOB_ID")}


class Heartbeat:
    """Touches ``<run_dir>/heartbeat`` every ``interval_s`` from a daemon thread while a trial runs.

    On exit by ``SystemExit``/``KeyboardInterrupt`` (Ctrl-C, a preemption signal) the file is marked
    ``stopped`` so that the next ``terramind-ft sweep`` resumes the trial at once instead of waiting for the
    heartbeat to go stale.
    """

    def __init__(self, run_dir: Path, interval_s: float):
        self.path = Path(run_dir) / HEARTBEAT_FILE
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def beat(self, stopped: bool = False) -> None:
        info = {**worker_identity(), "time": time.time(), "stopped": stopped}
        atomic_write_json(self.path, info)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.beat()
            except OSError as exc:  # a flaky shared filesystem must not kill the trial
                log.warning("heartbeat %s not written: %s", self.path, exc)

    def __enter__(self) -> Heartbeat:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.beat()
        self._thread = threading.Thread(target=self._run, name="sweep-heartbeat", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._stop.set()
        if exc_type is not None and not issubclass(exc_type, Exception):
            # A second Ctrl-C (Lightning restores the SIGINT handler in its teardown) must not cut this short.
            main = threading.current_thread() is threading.main_thread()
            previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None
            try:
                self.beat(stopped=True)
            except OSError:
                pass
            finally:
                if main:
                    signal.signal(signal.SIGINT, previous)


def heartbeat_age(run_dir: str | Path | None) -> tuple[float | None, bool]:
    """(seconds since the last heartbeat or None when there is none, whether the worker marked it stopped)."""
    if not run_dir:
        return None, False
    path = Path(run_dir) / HEARTBEAT_FILE
    try:
        mtime = path.stat().st_mtime
        stopped = bool(json.loads(path.read_text()).get("stopped"))
    except (OSError, ValueError):
        return None, False
    return max(0.0, time.time() - mtime), stopped


def worker_is_gone(run_dir: str | Path | None) -> bool:
    """The heartbeat's writer was a process on this host that no longer exists (killed with SIGKILL, OOM)."""
    if not run_dir:
        return False
    try:
        info = json.loads((Path(run_dir) / HEARTBEAT_FILE).read_text())
    except (OSError, ValueError):
        return False
    pid = info.get("pid")
    if info.get("host") != socket.gethostname() or not isinstance(pid, int) or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def is_stale(spec: SweepSpec, trial: FrozenTrial, now: float | None = None) -> bool:
    """A RUNNING trial whose worker is gone: its process no longer exists on this host, or its heartbeat is
    stopped, too old, or was never written in time."""
    if trial.state != TrialState.RUNNING:
        return False
    age, stopped = heartbeat_age(trial.user_attrs.get("run_dir"))
    if stopped or worker_is_gone(trial.user_attrs.get("run_dir")):
        return True
    if age is not None:
        return age > spec.study.stale_after_s
    started = trial.datetime_start.timestamp() if trial.datetime_start else None
    return started is not None and (now or time.time()) - started > spec.study.stale_after_s


def retry_trial(study: optuna.Study, trial: FrozenTrial, reason: str) -> int | None:
    """Mark a RUNNING trial FAIL and enqueue its parameters with the same run folder (to resume from
    ``last.ckpt``). Returns False-y when another process got there first or the trial finished meanwhile."""
    storage = study._storage  # the storage API (set_trial_state_values) is public; Study keeps it here
    try:
        # The state change is the atomic "claim": only one recovering process succeeds.
        storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
    except UpdateFinishedTrialError:
        return None
    attrs = {"retry_of": trial.number, "retry_reason": reason}
    if "run_dir" in trial.user_attrs:
        attrs["run_dir"] = trial.user_attrs["run_dir"]
    # A worker that died before suggesting its values leaves only the enqueued ones.
    params = dict(trial.params) or dict(trial.system_attrs.get("fixed_params", {}))
    study.enqueue_trial(params, user_attrs=attrs)
    log.warning("trial %d: %s; its parameters are enqueued again and will resume from %s", trial.number, reason,
                attrs.get("run_dir", "scratch"))
    return trial.number


def recover_stale_trials(spec: SweepSpec, study: optuna.Study) -> list[int]:
    """Re-enqueue every RUNNING trial whose worker is gone (see :func:`is_stale`)."""
    recovered = []
    now = time.time()
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if is_stale(spec, t, now):
            age, stopped = heartbeat_age(t.user_attrs.get("run_dir"))
            why = "its worker stopped" if stopped else "its worker process is gone" if worker_is_gone(
                t.user_attrs.get("run_dir")) else (f"no heartbeat for {age:.0f} s" if age is not None else
                                                   "its worker never reported")
            if retry_trial(study, t, why) is not None:
                recovered.append(t.number)
    return recovered


def recover_trial(study: optuna.Study, number: int, reason: str) -> bool:
    """Re-enqueue trial ``number`` if it is still RUNNING (a requeued worker resuming its own trial)."""
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if t.number == number:
            return retry_trial(study, t, reason) is not None
    return False


def retry_failed_trials(study: optuna.Study) -> list[int]:
    """Enqueue again every FAIL trial that failed with an error (``--retry-failed``)."""
    trials = study.get_trials(deepcopy=False)
    gone = superseded(trials)
    out = []
    for t in trials:
        if t.state == TrialState.FAIL and t.number not in gone:
            attrs = {"retry_of": t.number, "retry_reason": "--retry-failed"}
            if "run_dir" in t.user_attrs:
                attrs["run_dir"] = t.user_attrs["run_dir"]
            study.enqueue_trial(dict(t.params), user_attrs=attrs)
            out.append(t.number)
    return out


# --------------------------------------------------------------------------------------------------------
# Metric tracking and pruning inside Lightning


def _as_float(value: Any) -> float | None:
    try:
        out = float(value.item() if hasattr(value, "item") else value)
    except (TypeError, ValueError):
        return None
    return out


class TrialMetricCallback(Callback):
    """Records the sweep metric after every validation epoch, reports it to Optuna and prunes.

    This is the small part of ``optuna_integration.PyTorchLightningPruningCallback`` a sweep needs (that
    package is not a dependency). The history is kept in ``<run_dir>/metric_history.json`` so that a trial
    resumed from ``last.ckpt`` still knows the epochs run before the interruption.
    """

    def __init__(self, trial: optuna.Trial, metric: str, direction: str, run_dir: Path, prune: bool):
        self.trial = trial
        self.metric = metric
        self.direction = direction
        self.path = Path(run_dir) / METRIC_HISTORY_FILE
        self.prune = prune
        self.history: dict[int, float] = {}
        if self.path.exists():
            try:
                self.history = {int(k): float(v) for k, v in json.loads(self.path.read_text()).items()}
            except (ValueError, OSError):
                self.history = {}
        self.last_metrics: dict[str, float] = {}

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        metrics = {k: f for k, v in trainer.callback_metrics.items() if (f := _as_float(v)) is not None}
        self.last_metrics = metrics
        if self.metric not in metrics:
            raise MetricNotLoggedError(
                f"study.metric {self.metric!r} was not logged by the model.{did_you_mean(self.metric, metrics)} "
                f"Logged metrics: {', '.join(sorted(metrics)) or 'none'}")
        value = metrics[self.metric]
        epoch = int(trainer.current_epoch)
        self.history[epoch] = value
        if trainer.is_global_zero:
            tmp = self.path.with_suffix(".json.tmp")
            tmp.write_text(json.dumps({str(k): v for k, v in sorted(self.history.items())}))
            tmp.replace(self.path)
        if not math.isfinite(value):
            return
        self.trial.report(value, step=epoch)
        if self.prune and self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned at epoch {epoch} with {self.metric}={value:.6g}")

    def objective_value(self, mode: str) -> float:
        if not self.history:
            raise MetricNotLoggedError(
                f"study.metric {self.metric!r} was never computed: no validation epoch ran (check "
                "trainer.limit_val_batches, check_val_every_n_epoch and the validation split)")
        if mode == "last":
            return self.history[max(self.history)]
        finite = [v for v in self.history.values() if math.isfinite(v)]
        if not finite:
            return float("nan")
        return max(finite) if self.direction == "maximize" else min(finite)


def describe_trial_times(trial: FrozenTrial) -> float | None:
    """Duration in seconds of a finished trial (None while it runs)."""
    if trial.datetime_start and trial.datetime_complete:
        return (trial.datetime_complete - trial.datetime_start).total_seconds()
    if trial.datetime_start and trial.state == TrialState.RUNNING:
        return (datetime.now() - trial.datetime_start).total_seconds()
    return None


def params_summary(values: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in values.items())
