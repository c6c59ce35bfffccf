"""The ``sweep.yaml`` schema: load, validate and resolve a sweep file before anything runs.

A sweep file names a normal training config and says what to vary; only the ``launcher`` block differs
between a workstation and a SLURM cluster::

    base_config: configs/sen1floods11.yaml     # the normal LightningCLI config
    overrides: {trainer.max_epochs: 50}        # fixed for every trial (optional)
    study:
      name: s1f11_lr
      metric: val/mIoU
      direction: max                           # max | min | maximize | minimize
      n_trials: 24
      sampler: tpe                             # tpe | random | grid, or {type: tpe, n_startup_trials: 5}
      pruner: median                           # none | median | hyperband | successive_halving, or a mapping
    search_space:                              # dotted config keys -> distributions
      optimizer.init_args.lr: {type: float, low: 1.0e-5, high: 1.0e-3, log: true}
      model.init_args.model_args.backbone: [terramind_v1_tiny, terramind_v1_tiny_tim]
    launcher:
      cluster: local                           # local | slurm | debug
      gpus_per_trial: 1
      slurm: {partition: gpu, account: abc, array_parallelism: 8}

Every unknown key fails with "did you mean", every distribution is checked, and (in
:func:`check_against_cli`) every dotted key and every value it can take is parsed by the base config's own
LightningCLI parser, so that a typo fails here and not in trial 17 on a cluster.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
import io
import json
import logging
import math
import re
import shlex
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from terramind_ft.errors import ConfigError, did_you_mean
from terramind_ft.io import atomic_write_text

DEFAULT_CLI = "terramind_ft.cli:build_cli"
SAMPLERS = ("tpe", "random", "grid")
PRUNERS = ("none", "median", "hyperband", "successive_halving")
CLUSTERS = ("local", "slurm", "debug")
DIRECTIONS = {"max": "maximize", "maximize": "maximize", "min": "minimize", "minimize": "minimize"}
# Local jobs need some limit (submitit kills a local job at its timeout); a month is "none".
LOCAL_TIMEOUT_MIN = 30 * 24 * 60

TOP_KEYS = ("base_config", "cli", "output_dir", "overrides", "study", "search_space", "launcher")
STUDY_KEYS = ("name", "metric", "direction", "n_trials", "sampler", "pruner", "seed", "storage", "journal_lock",
              "objective", "heartbeat_s", "stale_after_s")
LAUNCHER_KEYS = ("cluster", "workers", "trials_per_worker", "gpus_per_trial", "cpus_per_trial", "mem_gb",
                 "timeout_min", "max_timeouts", "setup", "gpus", "python", "slurm")
SLURM_KEYS = ("partition", "account", "qos", "constraint", "array_parallelism", "signal_delay_s", "extra_sbatch")
DISTRIBUTION_KEYS = ("type", "low", "high", "log", "step", "choices")


# --------------------------------------------------------------------------------------------------------
# YAML: PyYAML follows YAML 1.1 and reads ``1e-5`` (no dot) as a *string*; learning rates are written that
# way, so the sweep file and the base config are read with the YAML 1.2 float rule.

class _Yaml12Loader(yaml.SafeLoader):
    pass


_Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                   |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                   |\.[0-9_]+(?:[eE][-+][0-9]+)?
                   |[-+]?\.(?:inf|Inf|INF)
                   |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."),
)


def load_yaml(path: Path) -> Any:
    """Read a YAML file with YAML 1.2 floats (``1e-5`` is a number)."""
    with open(path) as f:
        return yaml.load(f, Loader=_Yaml12Loader)


# --------------------------------------------------------------------------------------------------------
# The resolved sweep


@dataclass(frozen=True)
class Distribution:
    """One search-space entry: a dotted config key and the values it may take."""

    key: str
    kind: str  # "float" | "int" | "categorical"
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] = ()

    def samples(self) -> list[Any]:
        """Values that together exercise the whole range (both bounds, every choice) for validation."""
        if self.kind == "categorical":
            return list(self.choices)
        if self.kind == "int":
            return [int(self.low), int(self.high)]
        return [float(self.low), float(self.high)]

    def grid(self) -> list[Any]:
        """Every value, for the grid sampler; ranges need a ``step``."""
        if self.kind == "categorical":
            return list(self.choices)
        if self.step is None:
            raise ConfigError(f"the grid sampler needs a finite set of values: give this {self.kind} range a "
                              "'step' or list the values as choices", key=f"search_space.{self.key}")
        n = int(math.floor((self.high - self.low) / self.step + 1e-9)) + 1
        values = [self.low + i * self.step for i in range(n)]
        return [int(v) for v in values] if self.kind == "int" else [float(v) for v in values]

    def describe(self) -> str:
        if self.kind == "categorical":
            return f"one of {list(self.choices)}"
        scale = ", log" if self.log else (f", step {self.step}" if self.step is not None else "")
        return f"{self.kind} in [{self.low}, {self.high}{scale}]"


@dataclass(frozen=True)
class StudySpec:
    name: str
    metric: str
    direction: str  # "maximize" | "minimize"
    n_trials: int
    sampler: str = "tpe"
    sampler_args: dict[str, Any] = field(default_factory=dict)
    pruner: str = "none"
    pruner_args: dict[str, Any] = field(default_factory=dict)
    seed: int | None = None
    storage: str = ""  # a journal file path or an RDB URL; filled from output_dir when not given
    journal_lock: str = "open"  # "open" (NFSv3+) | "symlink" (older NFS)
    objective: str = "best"  # "best" epoch value of the metric, or the "last" one
    heartbeat_s: float = 60.0
    stale_after_s: float = 600.0

    @property
    def storage_is_url(self) -> bool:
        return "://" in self.storage


@dataclass(frozen=True)
class SlurmSpec:
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    array_parallelism: int | None = None
    signal_delay_s: int = 120
    extra_sbatch: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class LauncherSpec:
    cluster: str = "local"
    workers: int | None = None  # None: local = one per GPU (1 on CPU); slurm = n_trials
    trials_per_worker: int | None = None  # None: local/debug = until the budget is spent; slurm = 1
    gpus_per_trial: int = 0  # 0 (CPU) or 1
    cpus_per_trial: int | None = None
    mem_gb: float | None = None
    timeout_min: int | None = None
    max_timeouts: int = 3
    setup: tuple[str, ...] = ()
    gpus: tuple[int, ...] | None = None  # local: GPU ids to use (default: every visible GPU)
    python: str | None = None
    slurm: SlurmSpec = field(default_factory=SlurmSpec)


@dataclass(frozen=True)
class SweepSpec:
    """A validated sweep file with every path absolute (workers on other machines receive it pickled)."""

    path: Path
    base_config: Path
    cli: str
    output_dir: Path
    overrides: dict[str, Any]
    search_space: tuple[Distribution, ...]
    study: StudySpec
    launcher: LauncherSpec

    @property
    def trials_dir(self) -> Path:
        return self.output_dir / "trials"

    @property
    def resolved_base_path(self) -> Path:
        """The checked config as the CLI parser resolved it, every ``class_path``/``init_args`` level spelled
        out (written by :func:`check_against_cli`; a skeleton to place keys the base YAML leaves implicit)."""
        return self.output_dir / "base_resolved.yaml"

    @property
    def budget(self) -> int:
        """Trials to run: ``n_trials``, or the grid size when that is smaller (a grid is not repeated)."""
        if self.study.sampler != "grid":
            return self.study.n_trials
        return min(self.study.n_trials, math.prod(len(d.grid()) for d in self.search_space))

    def distribution(self, key: str) -> Distribution:
        for d in self.search_space:
            if d.key == key:
                return d
        raise KeyError(key)


# --------------------------------------------------------------------------------------------------------
# Loading and validating the file


class _Checker:
    """Reads one mapping of the sweep file, naming the file and the dotted key in every error."""

    def __init__(self, file: Path):
        self.file = file

    def error(self, key: str, message: str) -> ConfigError:
        return ConfigError(f"{message} (in {self.file})", key=key)

    def mapping(self, value: Any, key: str, allowed: Iterable[str]) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise self.error(key, f"expected a mapping, got {type(value).__name__} {value!r}")
        allowed = list(allowed)
        for k in value:
            if k not in allowed:
                where = f"{key}.{k}" if key else str(k)
                raise self.error(where, f"unknown key.{did_you_mean(str(k), allowed)} Valid keys: "
                                        f"{', '.join(allowed)}")
        return dict(value)

    def number(self, value: Any, key: str, kind: type = float, minimum: float | None = None,
               optional: bool = False) -> Any:
        if value is None and optional:
            return None
        if isinstance(value, str):  # "1e-5" written in a YAML 1.1 style file
            try:
                value = float(value)
            except ValueError:
                raise self.error(key, f"expected a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.error(key, f"expected a number, got {value!r}")
        if kind is int:
            if float(value) != int(value):
                raise self.error(key, f"expected an integer, got {value!r}")
            value = int(value)
        else:
            value = float(value)
        if minimum is not None and value < minimum:
            raise self.error(key, f"must be >= {minimum}, got {value!r}")
        return value

    def string(self, value: Any, key: str, choices: Iterable[str] | None = None, optional: bool = False) -> Any:
        if value is None and optional:
            return None
        if not isinstance(value, str) or not value:
            raise self.error(key, f"expected a non-empty string, got {value!r}")
        if choices is not None and value not in choices:
            choices = list(choices)
            raise self.error(key, f"unknown value {value!r}.{did_you_mean(value, choices)} Valid values: "
                                  f"{', '.join(choices)}")
        return value

    def boolean(self, value: Any, key: str) -> bool:
        if not isinstance(value, bool):
            raise self.error(key, f"expected true or false, got {value!r}")
        return value


def _dotted_key(checker: _Checker, key: Any, section: str) -> str:
    if not isinstance(key, str) or not re.fullmatch(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*", key):
        raise checker.error(f"{section}.{key}", "expected a dotted config key such as "
                                                "'optimizer.init_args.lr'")
    return key


def parse_distribution(checker: _Checker, key: str, value: Any) -> Distribution:
    """``[a, b]`` -> categorical; ``{type: float|int, low, high, log?, step?}``; ``{type: categorical, choices}``."""
    where = f"search_space.{key}"
    if isinstance(value, (list, tuple)):
        value = {"type": "categorical", "choices": list(value)}
    if not isinstance(value, Mapping):
        raise checker.error(where, f"expected a list of choices or a mapping with 'type', got {value!r}. "
                                   "To fix a value for every trial, put it under 'overrides:'")
    spec = checker.mapping(value, where, DISTRIBUTION_KEYS)
    kind = checker.string(spec.get("type"), f"{where}.type", ("float", "int", "categorical"))
    if kind == "categorical":
        extra = sorted(set(spec) - {"type", "choices"})
        if extra:
            raise checker.error(f"{where}.{extra[0]}", "not valid for a categorical distribution (only 'choices')")
        choices = spec.get("choices")
        if not isinstance(choices, (list, tuple)) or len(choices) == 0:
            raise checker.error(f"{where}.choices", f"expected a non-empty list, got {choices!r}")
        labels = [json.dumps(c, sort_keys=True) for c in choices]
        if len(set(labels)) != len(labels):
            raise checker.error(f"{where}.choices", f"repeated values in {list(choices)}")
        return Distribution(key=key, kind="categorical", choices=tuple(choices))
    if "choices" in spec:
        raise checker.error(f"{where}.choices", f"not valid for type {kind}; use type: categorical")
    if "low" not in spec or "high" not in spec:
        raise checker.error(where, f"a {kind} distribution needs 'low' and 'high'")
    number_kind = int if kind == "int" else float
    low = checker.number(spec["low"], f"{where}.low", number_kind)
    high = checker.number(spec["high"], f"{where}.high", number_kind)
    log = checker.boolean(spec.get("log", False), f"{where}.log")
    step = checker.number(spec.get("step"), f"{where}.step", number_kind, optional=True)
    if not low < high:
        raise checker.error(where, f"needs low < high, got low={low!r}, high={high!r}")
    if log and low <= 0:
        raise checker.error(f"{where}.low", f"a log-scale range needs low > 0, got {low!r}")
    if log and step is not None:
        raise checker.error(where, "'log' and 'step' cannot be combined (Optuna samples either log-uniformly or "
                                   "on a step grid)")
    if step is not None and step <= 0:
        raise checker.error(f"{where}.step", f"must be > 0, got {step!r}")
    return Distribution(key=key, kind=kind, low=low, high=high, log=log, step=step)


def _type_and_args(checker: _Checker, value: Any, key: str, names: Iterable[str]) -> tuple[str, dict[str, Any]]:
    """``"median"`` or ``{type: median, n_startup_trials: 2}`` -> ("median", {"n_startup_trials": 2})."""
    if isinstance(value, Mapping):
        args = dict(value)
        name = checker.string(args.pop("type", None), f"{key}.type", names)
        return name, args
    return checker.string(value, key, names), {}


def _parse_extra_sbatch(checker: _Checker, value: Any) -> dict[str, Any]:
    """``["--qos=high", "#SBATCH --exclusive", "--mail-type END"]`` or ``{qos: high}`` -> {"qos": "high", ...}."""
    key = "launcher.slurm.extra_sbatch"
    if value is None:
        return {}
    if isinstance(value, Mapping):
        return {str(k).lstrip("-"): v for k, v in value.items()}
    if not isinstance(value, (list, tuple)):
        raise checker.error(key, f"expected a list of sbatch options such as ['--qos=high'], got {value!r}")
    extra: dict[str, Any] = {}
    for line in value:
        text = str(line).strip()
        if text.startswith("#SBATCH"):
            text = text[len("#SBATCH"):].strip()
        if not text.startswith("-"):
            raise checker.error(key, f"{line!r} is not an sbatch option; write it as '--name=value' or '--flag'")
        parts = shlex.split(text)
        name, _, val = parts[0].lstrip("-").partition("=")
        if not val and len(parts) > 1:
            val = " ".join(parts[1:])
        extra[name] = val if val else True
    return extra


def load_spec(path: str | Path, output_dir: str | Path | None = None, cluster: str | None = None) -> SweepSpec:
    """Read and validate a sweep file. Relative paths are taken from the working directory, then from the
    sweep file's folder (the first that exists wins for ``base_config``). ``output_dir`` and ``cluster``
    replace the file's ``output_dir`` and ``launcher.cluster`` (command-line overrides)."""
    path = Path(path).resolve()
    if not path.is_file():
        raise ConfigError(f"sweep file not found: {path}", key="--config")
    try:
        raw = load_yaml(path)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    checker = _Checker(path)
    top = checker.mapping(raw, "", TOP_KEYS)
    for required in ("base_config", "study", "search_space"):
        if required not in top:
            raise checker.error(required, "required key is missing")

    base_name = checker.string(top["base_config"], "base_config")
    candidates = [Path(base_name).expanduser(), path.parent / base_name]
    base = next((c.resolve() for c in candidates if c.is_file()), None)
    if base is None:
        raise checker.error("base_config", f"training config {base_name!r} not found (looked in "
                                           f"{candidates[0].resolve()} and {candidates[1].resolve()})")
    cli = checker.string(top.get("cli", DEFAULT_CLI), "cli")
    if not re.fullmatch(r"[\w.]+:[\w]+", cli):
        raise checker.error("cli", f"expected 'module:function', got {cli!r}")

    # study
    raw_study = checker.mapping(top["study"], "study", STUDY_KEYS)
    for required in ("name", "metric", "direction", "n_trials"):
        if required not in raw_study:
            raise checker.error(f"study.{required}", "required key is missing")
    name = checker.string(raw_study["name"], "study.name")
    if not re.fullmatch(r"[\w.\-]+", name):
        raise checker.error("study.name", f"use letters, digits, '.', '-' or '_' (it names folders), got {name!r}")
    direction = checker.string(str(raw_study["direction"]).lower(), "study.direction", DIRECTIONS)
    sampler, sampler_args = _type_and_args(checker, raw_study.get("sampler", "tpe"), "study.sampler", SAMPLERS)
    pruner, pruner_args = _type_and_args(checker, raw_study.get("pruner", "none"), "study.pruner", PRUNERS)
    out = Path(output_dir or top.get("output_dir") or Path("runs") / "sweeps" / name).expanduser().resolve()
    storage = raw_study.get("storage")
    if storage is None:
        storage = str(out / "optuna.journal")
    else:
        storage = checker.string(storage, "study.storage")
        if "://" not in storage:
            storage = str(Path(storage).expanduser().resolve())
        elif not re.match(r"(postgresql|mysql|sqlite|oracle|mssql)[\w+]*://", storage):
            raise checker.error("study.storage", f"{storage!r} is neither a journal file path nor an SQLAlchemy "
                                                 "URL (postgresql://, mysql://, sqlite:///)")
    heartbeat_s = checker.number(raw_study.get("heartbeat_s", 60), "study.heartbeat_s", float, minimum=1)
    stale_after_s = checker.number(raw_study.get("stale_after_s", 10 * heartbeat_s), "study.stale_after_s", float)
    if stale_after_s < 2 * heartbeat_s:
        raise checker.error("study.stale_after_s", f"must be at least twice study.heartbeat_s ({heartbeat_s}), "
                                                   f"got {stale_after_s}")
    study = StudySpec(
        name=name,
        metric=checker.string(raw_study["metric"], "study.metric"),
        direction=DIRECTIONS[direction],
        n_trials=checker.number(raw_study["n_trials"], "study.n_trials", int, minimum=1),
        sampler=sampler,
        sampler_args=sampler_args,
        pruner=pruner,
        pruner_args=pruner_args,
        seed=checker.number(raw_study.get("seed"), "study.seed", int, optional=True),
        storage=storage,
        journal_lock=checker.string(raw_study.get("journal_lock", "open"), "study.journal_lock",
                                    ("open", "symlink")),
        objective=checker.string(raw_study.get("objective", "best"), "study.objective", ("best", "last")),
        heartbeat_s=heartbeat_s,
        stale_after_s=stale_after_s,
    )

    # search space and fixed overrides
    raw_space = top["search_space"]
    if not isinstance(raw_space, Mapping) or not raw_space:
        raise checker.error("search_space", "expected a non-empty mapping of dotted config keys to distributions")
    space = tuple(parse_distribution(checker, _dotted_key(checker, k, "search_space"), v)
                  for k, v in raw_space.items())
    raw_overrides = top.get("overrides") or {}
    if not isinstance(raw_overrides, Mapping):
        raise checker.error("overrides", f"expected a mapping of dotted config keys to values, got {raw_overrides!r}")
    overrides = {_dotted_key(checker, k, "overrides"): v for k, v in raw_overrides.items()}
    for d in space:
        if d.key in overrides:
            raise checker.error(f"overrides.{d.key}", "is also in search_space; keep it in one place")
        if d.key == "trainer.default_root_dir":
            raise checker.error("search_space.trainer.default_root_dir", "is set by the sweep (one folder per trial)")
    if "trainer.default_root_dir" in overrides:
        raise checker.error("overrides.trainer.default_root_dir", "is set by the sweep (one folder per trial); "
                                                                  "use output_dir instead")
    if sampler == "grid":
        for d in space:
            d.grid()  # raises when a range has no step

    launcher = _parse_launcher(checker, top.get("launcher"), study, cluster)
    if study.storage.startswith("sqlite") and (launcher.workers or 1) > 1:
        raise checker.error("study.storage", "SQLite cannot take several writers (Optuna FAQ); use the default "
                                             "journal file or a PostgreSQL/MySQL URL with more than one worker")
    return SweepSpec(path=path, base_config=base, cli=cli, output_dir=out, overrides=overrides,
                     search_space=space, study=study, launcher=launcher)


def _parse_launcher(checker: _Checker, value: Any, study: StudySpec, cluster: str | None = None) -> LauncherSpec:
    raw = checker.mapping(value, "launcher", LAUNCHER_KEYS)
    cluster = checker.string(cluster or raw.get("cluster", "local"), "launcher.cluster", CLUSTERS)
    setup = raw.get("setup") or []
    if isinstance(setup, str) or not all(isinstance(s, str) for s in setup):
        raise checker.error("launcher.setup", f"expected a list of shell lines, got {setup!r}")
    gpus = raw.get("gpus")
    if gpus is not None:
        if not isinstance(gpus, (list, tuple)) or not all(isinstance(g, int) and g >= 0 for g in gpus):
            raise checker.error("launcher.gpus", f"expected a list of GPU ids such as [0, 1], got {gpus!r}")
        gpus = tuple(gpus)
    raw_slurm = checker.mapping(raw.get("slurm"), "launcher.slurm", SLURM_KEYS)
    slurm = SlurmSpec(
        partition=checker.string(raw_slurm.get("partition"), "launcher.slurm.partition", optional=True),
        account=checker.string(raw_slurm.get("account"), "launcher.slurm.account", optional=True),
        qos=checker.string(raw_slurm.get("qos"), "launcher.slurm.qos", optional=True),
        constraint=checker.string(raw_slurm.get("constraint"), "launcher.slurm.constraint", optional=True),
        array_parallelism=checker.number(raw_slurm.get("array_parallelism"), "launcher.slurm.array_parallelism",
                                         int, minimum=1, optional=True),
        signal_delay_s=checker.number(raw_slurm.get("signal_delay_s", 120), "launcher.slurm.signal_delay_s", int,
                                      minimum=1),
        extra_sbatch=_parse_extra_sbatch(checker, raw_slurm.get("extra_sbatch")),
    )
    gpus_per_trial = checker.number(raw.get("gpus_per_trial", 0), "launcher.gpus_per_trial", int, minimum=0)
    if gpus_per_trial > 1:
        # A trial runs inside its worker process; Lightning cannot start DDP ranks from a submitit job that
        # holds one task (and each SLURM task would run its own worker). Multi-GPU runs: scripts/slurm/train.sbatch.
        raise checker.error("launcher.gpus_per_trial", "a sweep trial uses one GPU (0 = CPU); train a multi-GPU "
                                                       "config with scripts/slurm/train.sbatch")
    timeout = checker.number(raw.get("timeout_min"), "launcher.timeout_min", int, minimum=1, optional=True)
    if cluster == "slurm" and timeout is None:
        raise checker.error("launcher.timeout_min", "required with cluster: slurm (it becomes #SBATCH --time; "
                                                    "a preempted or timed-out worker is requeued)")
    return LauncherSpec(
        cluster=cluster,
        workers=checker.number(raw.get("workers"), "launcher.workers", int, minimum=1, optional=True),
        trials_per_worker=checker.number(raw.get("trials_per_worker"), "launcher.trials_per_worker", int, minimum=1,
                                         optional=True),
        gpus_per_trial=gpus_per_trial,
        cpus_per_trial=checker.number(raw.get("cpus_per_trial"), "launcher.cpus_per_trial", int, minimum=1,
                                      optional=True),
        mem_gb=checker.number(raw.get("mem_gb"), "launcher.mem_gb", float, minimum=0, optional=True),
        timeout_min=timeout,
        max_timeouts=checker.number(raw.get("max_timeouts", 3), "launcher.max_timeouts", int, minimum=0),
        setup=tuple(setup),
        gpus=gpus,
        python=checker.string(raw.get("python"), "launcher.python", optional=True),
        slurm=slurm,
    )


# --------------------------------------------------------------------------------------------------------
# Config values -> command-line overrides, and the check against the base config's own parser


def format_override(key: str, value: Any) -> str:
    """``("optimizer.init_args.lr", 1e-4)`` -> ``--optimizer.init_args.lr=0.0001`` (jsonargparse syntax)."""
    text = value if isinstance(value, str) else json.dumps(value)
    return f"--{key}={text}"


def override_args(values: Mapping[str, Any]) -> list[str]:
    return [format_override(k, v) for k, v in values.items()]


def load_callable(target: str) -> Callable[..., Any]:
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"cannot import {module_name!r} ({exc})", key="cli") from None
    if not hasattr(module, attr):
        raise ConfigError(f"{module_name!r} has no {attr!r}", key="cli")
    return getattr(module, attr)


@contextlib.contextmanager
def cli_argv() -> Any:
    """Hide our own command line from LightningCLI while it parses ``args`` (it warns when both are set)."""
    saved = sys.argv
    sys.argv = saved[:1]
    try:
        yield
    finally:
        sys.argv = saved


def configure_logging() -> None:
    """INFO messages of terramind_ft on stderr, once per process (workers run in fresh processes)."""
    from terramind_ft.cli.report import StderrHandler

    logger = logging.getLogger("terramind_ft")
    if not logger.handlers:
        handler = StderrHandler()  # follows sys.stderr (redirections, captures), keeps progress bars whole
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s", "%H:%M:%S"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


def parse_with_cli(spec: SweepSpec, values: Mapping[str, Any]) -> tuple[str | None, str]:
    """Parse the base config plus ``values`` with the CLI's parser, instantiating nothing.

    LightningCLI's ``--print_config`` parses and validates every argument, prints the resolved config and
    exits before any class is built. Returns ``(error message or None, printed config)``.
    """
    build = load_callable(spec.cli)
    args = ["fit", "--config", str(spec.base_config), *override_args(values), "--print_config"]
    out, err = io.StringIO(), io.StringIO()
    code: Any = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), cli_argv():
        try:
            build(args, run=True)
        except SystemExit as exc:  # --print_config ends with exit(0); a parser with exit_on_error exits 2
            code = exc.code
        except Exception as exc:  # ConfigError, or a parser that raises instead of exiting
            return (str(exc) if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}"), ""
    if code not in (0, None):
        text = err.getvalue().strip() or out.getvalue().strip()
        match = re.search(r"error: (.*)", text, re.S)
        return (match.group(1).strip() if match else text[-2000:]) or f"exit code {code}", ""
    return None, out.getvalue()


def flatten_keys(node: Any, prefix: str = "") -> list[str]:
    """Every dotted key of a nested mapping (lists are leaves)."""
    if not isinstance(node, Mapping):
        return [prefix] if prefix else []
    keys = [prefix] if prefix else []
    for k, v in node.items():
        keys += flatten_keys(v, f"{prefix}.{k}" if prefix else str(k))
    return keys


def has_key(config: Any, key: str) -> bool:
    """Whether dotted ``key`` is present in a nested mapping."""
    node = config
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False
        node = node[part]
    return True


def _printed(text: str) -> Any:
    return yaml.load(text, Loader=_Yaml12Loader)


def check_against_cli(spec: SweepSpec, progress: Callable[[str], None] | None = None,
                      write: bool = True) -> dict[str, Any]:
    """Parse the base config with the overrides and every search-space value; name the first bad key.

    One parse per categorical choice (numeric ranges try ``low`` and ``high`` along the way), each with
    LightningCLI's ``--print_config`` (nothing is built). Writes the resolved config of the first parse to
    ``spec.resolved_base_path`` (used to place keys the base YAML does not spell out; unless ``write`` is
    false) and returns it.
    """
    say = progress or (lambda _msg: None)
    section = {k: "overrides" for k in spec.overrides} | {d.key: "search_space" for d in spec.search_space}
    known: list[str] = []

    def base_keys() -> list[str]:
        error, printed = parse_with_cli(spec, {})
        if error:
            raise ConfigError(f"the base config does not parse: {error}", key="base_config")
        return flatten_keys(_printed(printed))

    def culprit(values: Mapping[str, Any]) -> None:
        keys = known or base_keys()
        for key, value in values.items():
            alone = {**spec.overrides, key: value} if section[key] == "search_space" else {key: value}
            err, _ = parse_with_cli(spec, alone)
            if err:
                if key not in keys:
                    hint = did_you_mean(key, keys) or " It is not a key of the base config's parser."
                    raise ConfigError(f"no such config key.{hint} Parser says: {err}", key=f"{section[key]}.{key}")
                raise ConfigError(f"value {value!r} is rejected by the base config's parser: {err}",
                                  key=f"{section[key]}.{key}")

    def landed(values: Mapping[str, Any], config: Mapping[str, Any]) -> None:
        # argparse accepts an unambiguous prefix ("--trainer.max_epoch" sets max_epochs): a key must land
        # where it says, or the recorded trial config would differ from the run.
        for key in values:
            if not has_key(config, key):
                hint = did_you_mean(key, known) or " The parser took it for another key."
                raise ConfigError(f"no such config key.{hint} Write the full dotted key.", key=f"{section[key]}.{key}")

    rounds = max(len(d.choices) if d.kind == "categorical" else 1 for d in spec.search_space)
    rounds = max(rounds, 2) if any(d.kind != "categorical" for d in spec.search_space) else rounds
    resolved: dict[str, Any] = {}
    for r in range(rounds):
        values = {d.key: d.samples()[r % len(d.samples())] for d in spec.search_space}
        say(f"checking {spec.base_config.name} with {len(spec.overrides)} override(s) and search-space values "
            f"{r + 1}/{rounds}: {values}")
        err, printed = parse_with_cli(spec, {**spec.overrides, **values})
        if err:
            culprit(spec.overrides)
            culprit(values)
            raise ConfigError(f"these values do not parse together: {values}: {err}", key="search_space")
        config = _printed(printed)
        if not isinstance(config, Mapping):
            raise ConfigError(f"--print_config of {spec.base_config} printed no config", key="base_config")
        if r == 0:
            resolved = dict(config)
            known = flatten_keys(resolved)
        landed({**spec.overrides, **values}, config)

    # A key inside a free-form mapping (model_args) always parses: a typo there ("backbon") only fails when
    # the model is built, in every trial. Catch the obvious ones: a new key next to a near-identical one.
    raw_keys = set(flatten_keys(load_yaml(spec.base_config) or {}))
    new_keys = [k for k in section if k not in raw_keys]
    if new_keys:
        keys = set(base_keys())
        for key in new_keys:
            if key in keys or "." not in key:
                continue
            parent, leaf = key.rsplit(".", 1)
            siblings = [k.rsplit(".", 1)[1] for k in keys if k.rsplit(".", 1)[0] == parent]
            close = difflib.get_close_matches(leaf, siblings, n=1, cutoff=0.85)
            if close:
                raise ConfigError(f"the base config has no {leaf!r} under {parent!r}. Did you mean "
                                  f"'{parent}.{close[0]}'? ({parent} takes any key, so only the model would "
                                  "notice, in every trial)", key=f"{section[key]}.{key}")
            say(f"note: {key} is a new entry of {parent}; it is checked when the model is built")
    if write:
        atomic_write_text(spec.resolved_base_path, yaml.safe_dump(resolved, sort_keys=False))
    return resolved
