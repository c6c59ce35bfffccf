"""The LightningCLI behind ``terramind-ft fit|validate|test|predict`` and :func:`build_cli` (sweeps).

What it adds to Lightning's CLI:

* short class names (``SemanticSegmentationTask``, ``GenericMultiModalDataModule``, ``ModelCheckpoint``...);
* TerraTorch configs: known ``terratorch.*`` class paths are mapped to ours with a one-line notice
  (:data:`TERRATORCH_CLASS_MAP`); task arguments we do not have are reported, never silently dropped;
* a pre-flight key check: an unknown or misspelt key fails with its dotted config key and "did you mean",
  instead of jsonargparse's long union errors;
* a predictable run folder (``trainer.default_root_dir``, default ``runs/<config name>``)::

      config.yaml          the resolved config of the last fit
      config_deploy.yaml   the same, inference-ready: no optimizer / lr_scheduler / ckpt_path / callbacks /
                           logger, pretrained weights off (the checkpoint has them)
      checkpoints/best.ckpt  best by the task's monitor (val/mIoU, val/Accuracy, val/RMSE)
      checkpoints/last.ckpt  for ``fit --ckpt_path last`` (resume)
      checkpoints/metrics.json  written by ``test`` next to the tested checkpoint
      previews/epoch<E>_<i>.png  validation input / label / prediction
      predictions/         ``predict`` outputs (or ``--predict_output_dir``) + predictions.json
      lightning_logs/      logger output

* ``--ckpt_path best|last`` resolve to those files in any process (``test --ckpt_path best`` works);
* ``lr_overrides`` also apply with a top-level ``optimizer:`` block (TerraTorch ignores them there);
* ``trainer.precision`` defaults to ``bf16-mixed`` where the hardware runs it natively (CUDA with bf16, or
  a CPU with AMX/AVX512-BF16), else ``32-true``; ``16-mixed`` on a machine without CUDA becomes that default
  with a notice (Lightning would refuse it).
"""

from __future__ import annotations

import copy
import functools
import hashlib
import inspect
import atexit
import logging
import math
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import yaml
from jsonargparse import ArgumentError
from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter, Callback, ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback

import terramind_ft.data.datamodule  # noqa: F401  (short class names resolve once imported)
import terramind_ft.tasks  # noqa: F401
from terramind_ft.errors import ConfigError, did_you_mean
from terramind_ft.inference.writers import PredictionWriter
from terramind_ft.io import atomic_write_json, atomic_write_text, read_yaml_mapping
from terramind_ft.tasks.base import BaseTask
from terramind_ft.tasks.metrics import METRIC_NAMES_VERSION

log = logging.getLogger("terramind_ft.cli")

RUNS_DIR = "runs"
CHECKPOINT_DIR = "checkpoints"
BEST, LAST = "best", "last"
METRICS_FILE = "metrics.json"
SUBCOMMANDS = ("fit", "validate", "test", "predict")

# TerraTorch / Lightning class paths -> ours (or None: dropped with a notice). Matched on the full path and on
# the bare class name.
TERRATORCH_CLASS_MAP: dict[str, str | None] = {
    "terratorch.datamodules.GenericMultiModalDataModule": "terramind_ft.data.datamodule.GenericMultiModalDataModule",
    "terratorch.datamodules.generic_multimodal_data_module.GenericMultiModalDataModule":
        "terramind_ft.data.datamodule.GenericMultiModalDataModule",
    "terratorch.tasks.SemanticSegmentationTask": "terramind_ft.tasks.SemanticSegmentationTask",
    "terratorch.tasks.ClassificationTask": "terramind_ft.tasks.ClassificationTask",
    "terratorch.tasks.PixelwiseRegressionTask": "terramind_ft.tasks.PixelwiseRegressionTask",
    "terratorch.callbacks.StateDictAwareModelCheckpoint": "lightning.pytorch.callbacks.ModelCheckpoint",
    "StateDictAwareModelCheckpoint": "lightning.pytorch.callbacks.ModelCheckpoint",
}
# TerraTorch task arguments with no counterpart here, and why they can go.
TERRATORCH_DROPPED_TASK_ARGS = {
    "path_to_record_metrics": "test always writes metrics.json next to the checkpoint",
    "output_most_probable": "use output_on_inference",
    "test_dataloaders_names": "one test loader is supported",
}


# ------------------------------------------------------------------------------------------------ helpers


def _notice(message: str) -> None:
    log.warning("notice: %s", message)


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time (so redirections and pytest's capture see it)."""

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def configure_logging() -> None:
    """Show terramind-ft's INFO messages (files written, notices) on stderr, once."""
    logger = logging.getLogger("terramind_ft")
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


@functools.cache
def cpu_has_native_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def default_precision() -> str:
    """``bf16-mixed`` where it runs natively (CUDA bf16 or a CPU with AMX/AVX512-BF16), else ``32-true``."""
    if torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "32-true"
    return "bf16-mixed" if cpu_has_native_bf16() else "32-true"


def _walk(node: Any, key: str = "") -> Iterator[tuple[str, dict]]:
    """Every mapping in a config tree with its dotted key."""
    if isinstance(node, dict):
        yield key, node
        for k, v in node.items():
            yield from _walk(v, f"{key}.{k}" if key else str(k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _walk(v, f"{key}[{i}]")


# ---------------------------------------------------------------------------------------- TerraTorch configs


def translate_terratorch(config: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Map TerraTorch class paths and arguments in a config dict to ours. Returns (new config, notices)."""
    config = copy.deepcopy(config)
    notices: list[str] = []
    for key, node in list(_walk(config)):
        path = node.get("class_path")
        if not isinstance(path, str):
            continue
        target = TERRATORCH_CLASS_MAP.get(path)
        if target is None and path.startswith("terratorch."):
            target = TERRATORCH_CLASS_MAP.get(path.rsplit(".", 1)[-1])
        if target is not None:
            node["class_path"] = target
            notices.append(f"{key}.class_path: {path} -> {target}")
            if target.endswith("ModelCheckpoint"):
                init = node.get("init_args") or {}
                if init.pop("save_best_only", None) is not None:
                    notices.append(f"{key}.init_args.save_best_only dropped (ModelCheckpoint keeps save_top_k best)")
        elif path.rsplit(".", 1)[-1] == "RichProgressBar" and not _importable("rich"):
            node["class_path"] = "lightning.pytorch.callbacks.TQDMProgressBar"
            node.pop("init_args", None)
            notices.append(f"{key}: RichProgressBar needs the 'rich' package, using TQDMProgressBar")
        elif path.startswith("terratorch."):
            raise ConfigError(f"{path} has no terramind-ft counterpart; supported TerraTorch classes: "
                              f"{', '.join(k for k in TERRATORCH_CLASS_MAP if '.' in k)}", key=f"{key}.class_path")
    model_init = (config.get("model") or {}).get("init_args") or {}
    for arg, why in TERRATORCH_DROPPED_TASK_ARGS.items():
        if arg in model_init:
            model_init.pop(arg)
            notices.append(f"model.init_args.{arg} dropped: {why}")
    return config, notices


def _importable(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


# ------------------------------------------------------------------------------------------ key checking


def _resolve_class(path: str) -> type | None:
    """The class for a class_path (dotted, or a short name of ours / Lightning's / torch's), or None."""
    if path in ("torch.optim.lr_scheduler.ReduceLROnPlateau", "ReduceLROnPlateau"):
        return _short_names()["ReduceLROnPlateau"]  # LightningCLI swaps in its subclass that takes ``monitor``
    if "." in path:
        module, _, name = path.rpartition(".")
        try:
            return getattr(__import__(module, fromlist=[name]), name)
        except (ImportError, AttributeError):
            return None
    return _short_names().get(path)


@functools.cache
def _short_names() -> dict[str, type]:
    import lightning.pytorch.callbacks as callbacks
    import lightning.pytorch.loggers as loggers

    from terramind_ft.data.datamodule import GenericMultiModalDataModule

    from lightning.pytorch.cli import ReduceLROnPlateau  # Lightning's, with ``monitor``

    names: dict[str, type] = {"GenericMultiModalDataModule": GenericMultiModalDataModule,
                              "ReduceLROnPlateau": ReduceLROnPlateau}
    for module in (terramind_ft.tasks, callbacks, loggers, torch.optim, torch.optim.lr_scheduler):
        for name in dir(module):
            obj = getattr(module, name)
            if inspect.isclass(obj) and name[:1].isupper():
                names.setdefault(name, obj)
    names["PredictionWriter"] = PredictionWriter
    return names


def init_parameters(cls: type) -> tuple[set[str], bool]:
    """Keyword names a class's __init__ takes, following ``**kwargs`` up the MRO; and whether any are free."""
    names: set[str] = set()
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        try:
            params = inspect.signature(vars(klass)["__init__"]).parameters.values()
        except (TypeError, ValueError):
            return names, True
        names |= {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)} - {"self"}
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            return names, False
        if klass is object:
            break
    return names, True


def _check_node(node: dict, key: str, base: str) -> None:
    path = node.get("class_path")
    if not isinstance(path, str):
        return
    cls = _resolve_class(path)
    if cls is None:
        if "." not in path:
            raise ConfigError(f"unknown class {path!r}.{did_you_mean(path, _short_names())} Give a full class path "
                              "or one of the short names", key=f"{key}.class_path")
        return  # an importable-later path (user module): jsonargparse will judge it
    extra = [k for k in node if k not in ("class_path", "init_args", "dict_kwargs")]
    if extra:
        raise ConfigError(f"unexpected key(s) {extra} next to class_path (arguments go under init_args)",
                          key=f"{key}.{extra[0]}")
    names, free = init_parameters(cls)
    if free:
        return
    for arg in node.get("init_args") or {}:
        if arg not in names:
            raise ConfigError(f"{cls.__name__} has no argument {arg!r}.{did_you_mean(arg, names)} Arguments: "
                              f"{', '.join(sorted(names))}", key=f"{key}.init_args.{arg}")


@functools.cache
def _method_keys() -> set[str]:
    """Top-level keys that only exist for a subcommand (ckpt_path, weights_only, verbose, return_predictions)."""
    keys: set[str] = set()
    for sub in SUBCOMMANDS:
        skip = LightningCLI.subcommands()[sub] | {"self"}
        keys |= {p for p in inspect.signature(getattr(Trainer, sub)).parameters if p not in skip}
    return keys


def check_config_keys(config: dict[str, Any], subcommand: str | None) -> None:
    """Raise :class:`ConfigError` (dotted key + "did you mean") for the first unknown key in ``config``."""
    top = {"seed_everything", "trainer", "model", "data", "optimizer", "lr_scheduler", "predict_output_dir"}
    if subcommand in SUBCOMMANDS:
        skip = LightningCLI.subcommands()[subcommand]
        top |= {p for p in inspect.signature(getattr(Trainer, subcommand)).parameters if p not in skip | {"self"}}
    for k in config:
        if k not in top:
            raise ConfigError(f"unknown top-level key.{did_you_mean(k, top)} Valid: {', '.join(sorted(top))}", key=k)
    trainer_cfg = config.get("trainer") or {}
    if isinstance(trainer_cfg, dict):
        names, _ = init_parameters(Trainer)
        for k in trainer_cfg:
            if k not in names:
                raise ConfigError(f"Trainer has no argument {k!r}.{did_you_mean(k, names)}", key=f"trainer.{k}")
    for key, node in _walk(config):
        # only the nodes LightningCLI instantiates; transform entries and model_args are checked by their owners
        if key in ("model", "data", "optimizer", "lr_scheduler") or re.fullmatch(
                r"trainer\.(callbacks|logger|plugins)(\[\d+\])?", key):
            _check_node(node, key, key)


# ------------------------------------------------------------------------------------------ config files


def _config_paths(args: list[str]) -> list[tuple[int, str]]:
    """(index in args, path) of every ``-c/--config`` value."""
    out = []
    for i, a in enumerate(args):
        if a in ("-c", "--config") and i + 1 < len(args):
            out.append((i + 1, args[i + 1]))
        elif a.startswith("--config="):
            out.append((i, a.split("=", 1)[1]))
    return out


def prepare_args(args: list[str], subcommand: str | None, tmp_dir: str | None = None) -> list[str]:
    """Translate TerraTorch configs (to a temp copy), check keys, and give the run a default root dir."""
    args = list(args)
    merged: dict[str, Any] = {}
    for index, path in _config_paths(args):
        raw = read_yaml_mapping(path)
        translated, notices = translate_terratorch(raw)
        if subcommand is None:  # build_cli(run=False) has no subcommand: drop fit/test/... method arguments
            for k in _method_keys() & set(translated):
                value = translated.pop(k)
                if value is not None:
                    notices.append(f"{k}: {value!r} ignored (only used by fit/validate/test/predict)")
        for n in notices:
            _notice(n)
        check_config_keys(translated, subcommand)
        merged.update(translated)
        if translated != raw:
            if tmp_dir is None:
                tmp_dir = tempfile.mkdtemp(prefix="terramind_ft_config_")
                atexit.register(shutil.rmtree, tmp_dir, ignore_errors=True)
            new_path = os.path.join(tmp_dir, f"{len(os.listdir(tmp_dir))}_{Path(path).name}")
            with open(new_path, "w") as f:
                yaml.safe_dump(translated, f, sort_keys=False)
            args[index] = new_path if not args[index].startswith("--config=") else f"--config={new_path}"
    root_given = (merged.get("trainer") or {}).get("default_root_dir") or any(
        a.startswith("--trainer.default_root_dir") for a in args)
    if not root_given:
        paths = _config_paths(args)
        name = (translated_name(paths[-1][1]) or Path(paths[-1][1]).stem) if paths else "run"
        args.append(f"--trainer.default_root_dir={os.path.join(RUNS_DIR, name)}")
    return args


def translated_name(path: str) -> str | None:
    """The original config name of a translated temp copy (``<n>_<name>.yaml``)."""
    p = Path(path)
    if p.parent.name.startswith("terramind_ft_config_") and "_" in p.stem:
        return p.stem.split("_", 1)[1]
    return None


# -------------------------------------------------------------------------------------------- callbacks


def deploy_config(config: dict[str, Any]) -> dict[str, Any]:
    """An inference-ready copy of a resolved config (see the module docstring)."""
    config = copy.deepcopy(config)
    for k in ("optimizer", "lr_scheduler", "ckpt_path"):
        config.pop(k, None)
    trainer_cfg = config.get("trainer") or {}
    for k in ("callbacks", "logger"):
        trainer_cfg.pop(k, None)
    for _, node in _walk(config.get("model") or {}):
        for k in list(node):
            if k in ("backbone_pretrained", "pretrained") and node[k]:
                node[k] = False
            if k == "backbone_ckpt_path":
                node[k] = None
    return config


class RunFolderConfig(SaveConfigCallback):
    """Writes config.yaml and config_deploy.yaml into the run folder (``trainer.default_root_dir``) on fit."""

    def __init__(self, *args: Any, **kwargs: Any):
        kwargs["save_to_log_dir"] = False
        super().__init__(*args, **kwargs)

    def save_config(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        run_dir = Path(trainer.default_root_dir)
        text = self.parser.dump(self.config, skip_none=False)
        atomic_write_text(run_dir / "config.yaml", text)
        deploy = deploy_config(yaml.safe_load(text))
        atomic_write_text(run_dir / "config_deploy.yaml", yaml.safe_dump(deploy, sort_keys=False))
        log.info("run folder %s: config.yaml, config_deploy.yaml", run_dir)


class TestMetricsWriter(Callback):
    """After ``test``: every ``test/*`` metric (per class too) -> metrics.json next to the tested checkpoint
    (or in the run folder when no checkpoint was given)."""

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")}
        clean = {k: (None if math.isnan(v) else v) for k, v in sorted(metrics.items())}
        per_class: dict[str, dict[str, float | None]] = {}
        for name in getattr(pl_module, "class_names", []):
            for k, v in clean.items():
                metric = k.removeprefix("test/")
                if metric.endswith(f"_{name}"):
                    per_class.setdefault(name, {})[metric[: -len(name) - 1]] = v
        ckpt = trainer.ckpt_path
        folder = Path(ckpt).parent if ckpt else Path(trainer.default_root_dir)
        config = Path(trainer.default_root_dir) / "config.yaml"
        doc = {
            "checkpoint": str(ckpt) if ckpt else None,
            "metric_names_version": METRIC_NAMES_VERSION,
            "config_sha256": hashlib.sha256(config.read_bytes()).hexdigest() if config.exists() else None,
            "metrics": clean,
            "per_class": per_class,
        }
        path = folder / METRICS_FILE
        atomic_write_json(path, doc, indent=1)
        log.info("wrote %s", path)


# ------------------------------------------------------------------------------------------------- the CLI


class TerraMindCLI(LightningCLI):
    """LightningCLI with terramind-ft's run folder, ckpt aliases, lr_overrides and precision policy."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument("--predict_output_dir", type=str | None, default=None,
                            help="where predict writes its GeoTIFFs (default: <default_root_dir>/predictions)")

    def _prepare_subcommand_parser(self, klass: type, subcommand: str, **kwargs: Any) -> LightningArgumentParser:
        parser = super()._prepare_subcommand_parser(klass, subcommand, **kwargs)
        if subcommand == "predict":  # outputs go to files; do not also keep them all in memory
            parser.set_defaults({"return_predictions": False})
        return parser

    # -- config ----------------------------------------------------------------------------------------------
    def _section(self) -> Any:
        return self.config[self.config.subcommand] if self.config.get("subcommand") else self.config

    def run_dir(self) -> Path:
        root = self._section().trainer.default_root_dir
        return Path(root) if root else Path(RUNS_DIR) / "run"

    def _parse_ckpt_path(self) -> None:
        section = self._section()
        ckpt = section.get("ckpt_path")
        subcommand = self.config.get("subcommand")
        if ckpt in (BEST, LAST):
            path = self.run_dir() / CHECKPOINT_DIR / f"{ckpt}.ckpt"
            if path.is_file():
                section.ckpt_path = str(path)
                log.info("ckpt_path %s -> %s", ckpt, path)
            elif subcommand == "fit" and ckpt == LAST:
                _notice(f"ckpt_path last: no {path} yet, training from scratch")
                section.ckpt_path = None
            else:
                raise ConfigError(f"no {ckpt!r} checkpoint at {path} (trainer.default_root_dir="
                                  f"{section.trainer.default_root_dir}); run fit first or give a file", key="ckpt_path")
        if not section.get("ckpt_path"):
            return
        super()._parse_ckpt_path()
        # The checkpoint holds every weight: never download or read pretrained backbone weights again.
        model_cfg = self._section().model
        for part in ("init_args", "dict_kwargs"):
            model_args = (model_cfg.get(part) or {}).get("model_args") if model_cfg else None
            if isinstance(model_args, dict) and model_args.get("backbone_pretrained"):
                model_args["backbone_pretrained"] = False

    def before_instantiate_classes(self) -> None:
        trainer_cfg = self._section().trainer
        precision = trainer_cfg.get("precision")
        if str(precision) in ("16-mixed", "16", "16-true") and not torch.cuda.is_available():
            trainer_cfg.precision = default_precision()
            _notice(f"trainer.precision {precision} needs CUDA; using {trainer_cfg.precision}")

    # -- trainer ---------------------------------------------------------------------------------------------
    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list[Callback]) -> Trainer:
        """Add the run folder's callbacks before the Trainer exists (so Lightning adds no default checkpoint)."""
        run_dir = Path(config.get("default_root_dir") or self.run_dir())
        configured = list(config.get("callbacks") or []) + list(callbacks)
        checkpoints = [c for c in configured if isinstance(c, ModelCheckpoint)]
        for cb in checkpoints:
            if cb.dirpath is None:
                cb.dirpath = str(run_dir / CHECKPOINT_DIR)
        if not checkpoints and config.get("enable_checkpointing") is not False:
            monitor, mode = self.model.monitor if isinstance(self.model, BaseTask) else ("val/loss", "min")
            callbacks.append(ModelCheckpoint(dirpath=str(run_dir / CHECKPOINT_DIR), filename=BEST, monitor=monitor,
                                             mode=mode, save_top_k=1, save_last=True, auto_insert_metric_name=False))
        writers = [c for c in configured if isinstance(c, BasePredictionWriter)]
        if not writers:
            writers = [PredictionWriter()]
            callbacks.extend(writers)
        out_dir = self._section().get("predict_output_dir")
        for writer in writers:
            if isinstance(writer, PredictionWriter) and out_dir:
                writer.output_dir = out_dir
        callbacks.append(TestMetricsWriter())
        return super()._instantiate_trainer(config, callbacks)

    # -- optimiser -------------------------------------------------------------------------------------------
    def _add_configure_optimizers_method_to_model(self, subcommand: str | None) -> None:
        """Lightning builds a top-level ``optimizer:`` over ``model.parameters()``; hand it our parameter groups
        instead, so lr_overrides and frozen parameters are honoured there too."""
        model = self.model
        if not isinstance(model, BaseTask):
            return super()._add_configure_optimizers_method_to_model(subcommand)
        model.parameters = model.optimizer_param_groups  # type: ignore[method-assign]
        try:
            super()._add_configure_optimizers_method_to_model(subcommand)
        finally:
            del model.parameters


def _cli_kwargs() -> dict[str, Any]:
    return dict(
        model_class=BaseTask, datamodule_class=LightningDataModule, subclass_mode_model=True, subclass_mode_data=True,
        save_config_callback=RunFolderConfig, save_config_kwargs={"overwrite": True},
        trainer_defaults={"precision": default_precision()}, seed_everything_default=0,
        parser_kwargs={"version": _version(), "exit_on_error": False, "allow_abbrev": False}, auto_configure_optimizers=True,
    )


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"terramind-ft {version('terramind-ft')}"
    except PackageNotFoundError:  # running from a source tree that is not installed
        return "terramind-ft (not installed)"


def build_cli(args: list[str], run: bool = False) -> TerraMindCLI:
    """Parse ``args`` and instantiate model, datamodule and trainer (``run=True``: also run the subcommand
    that ``args`` starts with). With ``run=False`` a leading subcommand is accepted and ignored."""
    args = list(args)
    subcommand = args[0] if args and args[0] in SUBCOMMANDS else None
    if not run and subcommand:
        args = args[1:]
    if run and subcommand is None and not any(a in ("-h", "--help", "--version") for a in args):
        raise ConfigError(f"give a subcommand first: {', '.join(SUBCOMMANDS)}", key="subcommand")
    configure_logging()
    args = prepare_args(args, subcommand if run else None)
    argv, sys.argv = sys.argv, sys.argv[:1]  # args are explicit: keep Lightning from also reading sys.argv
    try:
        return TerraMindCLI(args=args, run=run, **_cli_kwargs())
    except Exception as err:  # jsonargparse wraps our typed errors in "Does not validate ..." unions
        cause = _typed_cause(err)
        if cause is not None and cause is not err:
            raise cause from None
        if isinstance(err, ArgumentError):
            key, message = summarize_jsonargparse_error(str(err))
            raise ConfigError(message, key=key) from None
        raise
    finally:
        sys.argv = argv


def summarize_jsonargparse_error(text: str) -> tuple[str | None, str]:
    """(dotted key, one-line reason) from a jsonargparse error, e.g. ``model.init_args.lr``, ``Expected a
    <class 'float'>. Got value: abc``."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    keys: list[str] = []
    reason = ""
    for i, line in enumerate(lines):
        match = re.match(r'(?:- )?(?:error: )?Parser key "([^"]+)":?(.*)', line)
        if match:
            keys.append(match.group(1))
            reason = match.group(2).strip() or (lines[i + 1] if i + 1 < len(lines) else "")
        elif re.search(r"Key '([^']+)' is not expected|Expected a|Got value|not expected", line) and not reason:
            reason = line
    if not keys:
        match = re.search(r"Key '([^']+)'", text)
        return (match.group(1) if match else None), (reason or lines[0] if lines else text)
    key = keys[0] + "".join(f".init_args.{k}" for k in keys[1:])
    return key, reason


def _typed_cause(err: BaseException) -> BaseException | None:
    """The first terramind-ft error in ``err``'s cause/context chain."""
    from terramind_ft.errors import TerraMindFTError

    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, TerraMindFTError):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def run_lightning_cli(argv: list[str]) -> None:
    """``terramind-ft fit|validate|test|predict ...``: configuration problems end with one clear line."""
    try:
        build_cli(list(argv), run=True)
    except SystemExit as exit_:  # --help, --print_config, --version
        if exit_.code not in (0, None):
            raise
    except ConfigError as err:
        print(f"terramind-ft: config error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
