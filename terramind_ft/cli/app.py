"""The LightningCLI behind ``terramind-ft fit|validate|test|predict`` and :func:`build_cli` (sweeps, Python).

What it adds to Lightning's CLI, each in its own module of this package:

* short class names and TerraTorch configs (:mod:`.terratorch`), a pre-flight key check (:mod:`.keys`);
* a run folder per run (:mod:`.run_folder`) with ``best.ckpt`` / ``last.ckpt`` written atomically
  (:mod:`.checkpoints`); ``--ckpt_path best|last`` name this run's files in any process;
* ``--ckpt_path`` restores the model's structure from the checkpoint while the settings the user gives (tiling,
  outputs, previews) win (:func:`.checkpoints.restore_plan`); a missing, truncated or ill-fitting checkpoint is
  refused before anything is written;
* monitors checked before training (:mod:`.preflight`); SIGTERM/SIGINT handled (:mod:`.signals`);
* ``lr_overrides`` also apply with a top-level ``optimizer:`` block (TerraTorch ignores them there);
* ``trainer.precision`` defaults to ``bf16-mixed`` where the hardware runs it natively (CUDA with bf16, or
  a CPU with AMX/AVX512-BF16), else ``32-true``; ``16-mixed`` on a machine without CUDA becomes that default
  with a notice (Lightning would refuse it).
"""

from __future__ import annotations

import atexit
import functools
import logging
import os
import re
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any, Literal

import torch
import yaml
from jsonargparse import ArgumentError
from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter, Callback, ModelCheckpoint, ProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.plugins.io import CheckpointIO

import terramind_ft.data.datamodule  # noqa: F401  (short class names resolve once imported)
import terramind_ft.tasks  # noqa: F401
from terramind_ft.cli.checkpoints import (
    BEST,
    CHECKPOINT_DIR,
    LAST,
    AtomicCheckpointIO,
    LastCheckpoint,
    best_checkpoint,
    check_weights_fit,
    load_checkpoint_file,
    restore_plan,
    saved_task,
    state_shapes,
)
from terramind_ft.cli.config import RUNS_DIR, config_paths, importable, notice
from terramind_ft.cli.keys import (
    SUBCOMMANDS,
    _method_keys,
    _resolve_class,
    check_config_keys,
    check_optional_packages,
    check_override_keys,
    given_init_keys,
)
from terramind_ft.cli.help import CKPT_PATH_HELP
from terramind_ft.cli.custom_modules import custom_modules_from, import_custom_modules
from terramind_ft.cli.metrics_file import TestMetricsWriter
from terramind_ft.cli.preflight import check_band_agreement, check_monitors
from terramind_ft.cli.report import Interrupted, StderrHandler
from terramind_ft.cli.run_folder import RunFolderConfig, RunLock, claim_for_fit
from terramind_ft.cli.signals import GracefulFitStop, stop_at_once
from terramind_ft.cli.terratorch import translate_terratorch, with_command_line_overrides
from terramind_ft.errors import CheckpointError, ConfigError, TerraMindFTError, find_in_chain
from terramind_ft.inference.geotiff import OUT_DTYPES, check_out_dtype
from terramind_ft.inference.writers import PredictionWriter
from terramind_ft.io import read_yaml_mapping
from terramind_ft.models.factory import without_weight_sources
from terramind_ft.tasks.base import BaseTask

log = logging.getLogger("terramind_ft.cli")

UNTRAINED = "untrained"  # the weights tag of outputs made without a fitted checkpoint

# ------------------------------------------------------------------------------------------------ logging


# Third-party messages a user cannot act on (they concern our own design or Lightning's internals): not shown.
UNACTIONABLE_WARNINGS = (
    r".*isinstance\(treespec, LeafSpec\).*",  # Lightning's use of torch's pytree
    r".*`tensorboardX` has been removed as a dependency.*",  # said once by terramind-ft instead, with the extra
    r".*\.configure_optimizers` will be overridden by `TerraMindCLI.configure_optimizers`.*",  # lr_overrides, by design
    r".*is not supported by the model summary.*",
    # our epoch metrics are torchmetrics synchronised across ranks before they are logged: nothing to add
    r".*It is recommended to use `self.log\('(val|test)/.*sync_dist=True\)` when logging on epoch level.*",
    # we pass the parsed args and keep sys.argv the user's command on purpose (DDP's launcher re-runs it)
    r".*LightningCLI's args parameter is intended to run from within Python.*",
    # fit refuses a folder with checkpoints unless it resumes (--ckpt_path last) or --overwrite clears it first:
    # the one way this is said is a resume into its own folder, which is what was asked
    r".*Checkpoint directory .*[/\\]checkpoints exists and is not empty.*",
)
UNACTIONABLE_INFO = ("💡 Tip:",)  # Lightning's advertisements for its cloud products


class _DropUnactionable(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith(UNACTIONABLE_INFO)


def _show_notices_plainly() -> None:
    """terramind-ft's own warning categories print as ``notice: ...``, not with the path of the library frame
    that happened to trigger them (``.../lightning/pytorch/cli.py:890: ...``). Only the formatting changes, so
    ``warnings.catch_warnings(record=True)`` and pytest still see every warning."""
    from terramind_ft.errors import Notice

    original = warnings.formatwarning
    if getattr(original, "_terramind_ft", False):
        return

    def formatwarning(message: Any, category: type, filename: str, lineno: int, line: Any = None) -> str:
        if issubclass(category, Notice):
            # each DDP process sets its data up and would say every notice again: rank 0 says it for all
            return f"notice: {message}\n" if rank_zero_only.rank == 0 else ""
        return original(message, category, filename, lineno, line)

    formatwarning._terramind_ft = True  # type: ignore[attr-defined]
    warnings.formatwarning = formatwarning


def configure_logging() -> None:
    """Show terramind-ft's INFO messages (files written, notices) on stderr, once; keep the console to what a
    user can act on."""
    logger = logging.getLogger("terramind_ft")
    if not any(isinstance(h, StderrHandler) for h in logger.handlers):
        handler = StderrHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    for pattern in UNACTIONABLE_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    for name in ("lightning.pytorch", "lightning.fabric", "pytorch_lightning"):
        for handler in logging.getLogger(name).handlers:
            if not any(isinstance(f, _DropUnactionable) for f in handler.filters):
                handler.addFilter(_DropUnactionable())
    _show_notices_plainly()


# ---------------------------------------------------------------------------------------------- precision


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


# ------------------------------------------------------------------------------------------ config files


def prepare_args(args: list[str], subcommand: str | None, tmp_dir: str | None = None) -> list[str]:
    """Translate TerraTorch configs (to a temp copy), check keys, and give the run a default root dir."""
    args = list(args)
    merged: dict[str, Any] = {}
    raws = {index: read_yaml_mapping(path) for index, path in config_paths(args)}
    # overrides that a TerraTorch config's translation depends on go into it first (so they are not lost)
    args = with_command_line_overrides(list(raws.values()), args)
    raws = dict(zip((index for index, _ in config_paths(args)), raws.values()))
    custom = custom_modules_from(args, list(raws.values()))
    if custom:  # before any key is checked: the configs may name their classes
        import_custom_modules(custom)
    for index, path in config_paths(args):
        raw = raws[index]
        translated, notices = translate_terratorch(raw)
        if subcommand is None:  # build_cli(run=False) has no subcommand: drop fit/test/... method arguments
            for k in _method_keys() & set(translated):
                value = translated.pop(k)
                if value is not None:
                    notices.append(f"{k}: {value!r} ignored (only used by fit/validate/test/predict)")
        for n in notices:
            notice(n)
        check_config_keys(translated, subcommand)
        check_optional_packages(translated)
        merged.update(translated)
        if translated != raw:
            if tmp_dir is None:
                tmp_dir = tempfile.mkdtemp(prefix="terramind_ft_config_")
                atexit.register(shutil.rmtree, tmp_dir, ignore_errors=True)
            new_path = os.path.join(tmp_dir, f"{len(os.listdir(tmp_dir))}_{Path(path).name}")
            with open(new_path, "w") as f:
                yaml.safe_dump(translated, f, sort_keys=False)
            args[index] = new_path if not args[index].startswith("--config=") else f"--config={new_path}"
    check_override_keys(args, merged, subcommand)
    root_given = (merged.get("trainer") or {}).get("default_root_dir") or any(
        a.startswith("--trainer.default_root_dir") for a in args)
    asks_help = any(a in ("-h", "--help") or a.split("=", 1)[0].endswith(".help") for a in args)
    if not root_given and not asks_help:  # (help prints and exits; an appended option would break it)
        paths = config_paths(args)
        name = (translated_name(paths[-1][1]) or Path(paths[-1][1]).stem) if paths else "run"
        args.append(f"--trainer.default_root_dir={os.path.join(RUNS_DIR, name)}")
    return args


def translated_name(path: str) -> str | None:
    """The original config name of a translated temp copy (``<n>_<name>.yaml``)."""
    p = Path(path)
    if p.parent.name.startswith("terramind_ft_config_") and "_" in p.stem:
        return p.stem.split("_", 1)[1]
    return None


# ------------------------------------------------------------------------------------------------- the CLI


class TerraMindCLI(LightningCLI):
    """LightningCLI with terramind-ft's run folder, checkpoints, ckpt_path semantics, signals and pre-flight."""

    _ckpt_shapes: dict[str, tuple[int, ...]] | None = None

    def __init__(self, *args: Any, backbone_weights: bool = True, **kwargs: Any):
        # backbone_weights=False: the caller brings every backbone weight itself (embed --ckpt_path), so the
        # config's pretrained download or backbone file is neither fetched nor read
        self._backbone_weights = backbone_weights
        self._given_model_keys = given_init_keys(list(kwargs.get("args") or []))
        super().__init__(*args, **kwargs)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument("--predict_output_dir", type=str | None, default=None,
                            help="where predict writes its GeoTIFFs (default: <default_root_dir>/predictions)")
        parser.add_argument("--out_dtype", type=Literal[OUT_DTYPES] | None, default=None,
                            help="predict: the type of class maps (default uint8, nodata 255) or regression values "
                                 "(default float32); TerraTorch's option: signed and float class maps get nodata -1")
        parser.add_argument("--float32_matmul_precision", type=Literal["highest", "high", "medium"] | None,
                            default=None,
                            help="torch.set_float32_matmul_precision before the model is built: 'medium' lets float32 "
                                 "matmuls run in bf16 on CPUs with AVX512-BF16/AMX and GPUs with TF32/bf16 (faster, "
                                 "less exact); default: leave torch's 'highest'")
        parser.add_argument("--custom_modules_path", type=str | None, default=None,
                            help="a folder of your own modules, imported before the config is parsed, so that their "
                                 "classes resolve by dotted path and their registered decoders/backbones by name")
        parser.add_argument("--overwrite", type=bool, default=False,
                            help="fit: replace an earlier run's checkpoints, previews and configs in the run folder "
                                 "(default: refuse; --ckpt_path last resumes it instead)")

    def _prepare_subcommand_parser(self, klass: type, subcommand: str, **kwargs: Any) -> LightningArgumentParser:
        parser = super()._prepare_subcommand_parser(klass, subcommand, **kwargs)
        if subcommand == "predict":  # outputs go to files; do not also keep them all in memory
            parser.set_defaults({"return_predictions": False})
        if subcommand in ("test", "predict"):  # metrics.json / the outputs are the record: no lightning_logs/version_N
            parser.set_defaults({"trainer.logger": False})
        action = parser._option_string_actions.get("--ckpt_path")
        if action is not None:  # Lightning's text describes its own meaning of "best"
            action.help = CKPT_PATH_HELP
        return parser

    # -- config ----------------------------------------------------------------------------------------------
    def _section(self) -> Any:
        return self.config[self.config.subcommand] if self.config.get("subcommand") else self.config

    def run_dir(self) -> Path:
        root = self._section().trainer.default_root_dir
        return Path(root) if root else Path(RUNS_DIR) / "run"

    def _resolve_alias(self) -> str | None:
        """``best`` / ``last`` -> this run's file; a path must exist. Returns the checkpoint path or None."""
        section = self._section()
        ckpt = section.get("ckpt_path")
        if not ckpt:
            return None
        if self.config.get("subcommand") == "fit" and ckpt == LAST \
                and not (self.run_dir() / CHECKPOINT_DIR / f"{LAST}.ckpt").is_file():
            notice(f"ckpt_path last: no {self.run_dir() / CHECKPOINT_DIR / 'last.ckpt'} yet, training from scratch")
            section.ckpt_path = None
            return None
        path = self.checkpoint_file(ckpt)
        if path != ckpt:
            log.info("ckpt_path %s -> %s", ckpt, path)
            section.ckpt_path = path
        return path

    def checkpoint_file(self, ckpt: str, key: str = "ckpt_path") -> str:
        """``best`` / ``last`` -> this run's file (``<default_root_dir>/checkpoints/``); a path must exist."""
        if ckpt in (BEST, LAST):
            path = self.run_dir() / CHECKPOINT_DIR / f"{ckpt}.ckpt"
            if path.is_file():
                return str(path)
            raise ConfigError(f"no {ckpt!r} checkpoint at {path} (trainer.default_root_dir="
                              f"{self._section().trainer.default_root_dir}); run fit first or give a file", key=key)
        if not Path(ckpt).is_file():
            raise CheckpointError(f"--{key} {ckpt}: no such file" + (" (it is a folder)" if Path(ckpt).is_dir()
                                  else "") + "; give a .ckpt file, or best / last for this run's checkpoints")
        return str(ckpt)

    def _parse_ckpt_path(self) -> None:
        """Unlike Lightning's, which lays every saved hyper-parameter over the config and the command line: the
        checkpoint gives the model's structure, the user's settings win (see :func:`restore_plan`)."""
        if not self.config.get("subcommand"):
            if not self._backbone_weights:
                self._drop_weight_sources()
            return
        path = self._resolve_alias()
        if path is None:
            return
        # mapped, not read: Lightning reads the weights once, when the run restores them
        checkpoint = load_checkpoint_file(path, weights_only=True, mmap=True)
        self._ckpt_shapes = state_shapes(checkpoint)
        class_path, saved, terratorch_class = saved_task(checkpoint)
        del checkpoint
        if terratorch_class is not None:
            notice(f"{path} was written by TerraTorch ({terratorch_class}); it loads as {class_path}, its weights as "
                   "they are")
        section = self._section()
        if self._embeds_fitted_checkpoint(path, class_path):
            return
        if saved and section.get("model") is not None:
            model_cfg = section.model
            class_path = class_path or model_cfg.class_path
            task_class = _resolve_class(class_path) or BaseTask
            current = model_cfg.init_args.as_dict() if model_cfg.get("init_args") is not None else {}
            if class_path != model_cfg.class_path:
                notice(f"model.class_path: the config says {model_cfg.class_path}, the checkpoint holds a "
                       f"{class_path}; using the checkpoint's")
                current = {k: v for k, v in current.items() if k in getattr(task_class, "run_settings", ())}
            init_args, notices = restore_plan(task_class, saved, current, given=self._given_model_keys,
                                              subcommand=self.config.subcommand)
            for line in notices:
                notice(line)
            update = {self.config.subcommand: {"model": {"class_path": class_path, "init_args": init_args}}}
            try:
                self.config = self.parser.parse_object(update, self.config)
            except (ArgumentError, SystemExit) as err:
                raise CheckpointError(f"the hyper-parameters saved in {path} do not build a {class_path}: "
                                      f"{str(err).strip().splitlines()[0] if str(err).strip() else err}") from None
        # The checkpoint holds every weight: never download or read pretrained backbone weights again.
        self._drop_weight_sources()

    def _drop_weight_sources(self) -> None:
        """No pretrained download and no backbone file for the model of this config: a task's
        ``model_args.backbone_{pretrained,ckpt_path}`` (and its ``backbone_kwargs``), an embedding task's
        ``backbone_kwargs`` / ``model_args`` ``{pretrained, ckpt_path}``."""
        model_cfg = self._section().get("model")
        if model_cfg is None:
            return
        embeds = getattr(_resolve_class(model_cfg.class_path), "embeds_fitted_checkpoints", False)
        for part in ("init_args", "dict_kwargs"):
            args = model_cfg.get(part) or {}
            for key in ("backbone_kwargs", "model_args") if embeds else ("model_args",):
                value = args.get(key)
                if isinstance(value, dict):
                    value.update(without_weight_sources(value, prefix="" if embeds else "backbone_"))

    def _embeds_fitted_checkpoint(self, path: str, class_path: str | None) -> bool:
        """An embedding config (``EmbeddingTask``) with a fitted task's checkpoint: the user wants embeddings of
        the fine-tuned backbone, not that task's maps. Its backbone comes from the checkpoint (``backbone_from``);
        Lightning restores nothing (the checkpoint's decoder and head have no place in an EmbeddingTask)."""
        model_cfg = self._section().get("model")
        config_class = _resolve_class(model_cfg.class_path) if model_cfg is not None else None
        if not getattr(config_class, "embeds_fitted_checkpoints", False) or not class_path:
            return False
        if _resolve_class(class_path) is config_class:
            return False
        notice(f"ckpt_path {path} holds a fitted {class_path.rsplit('.', 1)[-1]}: embedding with its fine-tuned "
               f"backbone ({model_cfg.class_path.rsplit('.', 1)[-1]}.backbone_from; its decoder and head are not used)")
        update = {self.config.subcommand: {"ckpt_path": None, "model": {
            "class_path": model_cfg.class_path, "init_args": {"backbone_from": str(path)}}}}
        self.config = self.parser.parse_object(update, self.config)
        self._ckpt_shapes = None
        return True

    def before_instantiate_classes(self) -> None:
        matmul = self._section().get("float32_matmul_precision")
        if matmul:
            torch.set_float32_matmul_precision(matmul)
            if matmul != "highest":
                notice(f"float32_matmul_precision {matmul}: float32 matmuls may run in reduced precision (bf16/TF32)")
        trainer_cfg = self._section().trainer
        precision = trainer_cfg.get("precision")
        if str(precision) in ("16-mixed", "16", "16-true") and not torch.cuda.is_available():
            trainer_cfg.precision = default_precision()
            notice(f"trainer.precision {precision} needs CUDA; using {trainer_cfg.precision}")

    # -- trainer ---------------------------------------------------------------------------------------------
    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list[Callback]) -> Trainer:
        """Add the run folder's callbacks and the atomic checkpoint IO before the Trainer exists (so Lightning
        adds no default checkpoint of its own)."""
        run_dir = Path(config.get("default_root_dir") or self.run_dir())
        ckpt_dir = run_dir / CHECKPOINT_DIR
        if config.get("enable_progress_bar") is False:  # what was typed wins over a config's progress bar
            bars = [c for c in config.get("callbacks") or [] if isinstance(c, ProgressBar)]
            if bars:
                config = {**config, "callbacks": [c for c in config["callbacks"] if not isinstance(c, ProgressBar)]}
                notice(f"trainer.enable_progress_bar: false; the config's {type(bars[0]).__name__} is not used")
        configured = list(config.get("callbacks") or []) + list(callbacks)
        checkpoints = [c for c in configured if isinstance(c, ModelCheckpoint)]
        for cb in checkpoints:
            if cb.dirpath is None:
                cb.dirpath = str(ckpt_dir)
            if cb.save_last and Path(cb.dirpath) == ckpt_dir:
                cb.save_last = False  # two writers of one last.ckpt; ours writes it after every epoch
                notice(f"{type(cb).__name__}(save_last=True): last.ckpt is written by terramind-ft after every epoch")
        if config.get("enable_checkpointing") is not False:
            if not checkpoints:
                monitor, mode = self.model.monitor if isinstance(self.model, BaseTask) else ("val/loss", "min")
                callbacks.append(best_checkpoint(ckpt_dir, monitor, mode))
            else:
                notice(f"trainer.callbacks has its own ModelCheckpoint; terramind-ft adds {ckpt_dir / 'last.ckpt'}, "
                       "written after every epoch (resume with --ckpt_path last)")
            callbacks.append(LastCheckpoint(ckpt_dir))
        writers = [c for c in configured if isinstance(c, BasePredictionWriter)]
        if not writers:
            writers = [PredictionWriter()]
            callbacks.extend(writers)
        out_dir = self._section().get("predict_output_dir")
        out_dtype = self._section().get("out_dtype")
        check_out_dtype(out_dtype, getattr(self.model, "task", None))
        for writer in writers:
            if isinstance(writer, PredictionWriter) and out_dir:
                writer.output_dir = out_dir
            if isinstance(writer, PredictionWriter) and out_dtype:
                writer.out_dtype = out_dtype
        callbacks.append(TestMetricsWriter())
        if config.get("logger") is True and not (importable("tensorboard") or importable("tensorboardX")):
            notice(f"logger: CSV files in {run_dir / 'lightning_logs'} (for TensorBoard: pip install "
                   "'terramind-ft[tensorboard]')")
        plugins = config.get("plugins")
        plugins = [] if plugins is None else list(plugins) if isinstance(plugins, (list, tuple)) else [plugins]
        if not any(isinstance(p, CheckpointIO) for p in plugins):
            config = {**config, "plugins": [*plugins, AtomicCheckpointIO()]}
        return super()._instantiate_trainer(config, callbacks)

    # -- optimiser -------------------------------------------------------------------------------------------
    def _add_configure_optimizers_method_to_model(self, subcommand: str | None) -> None:
        """Lightning builds a top-level ``optimizer:`` over ``model.parameters()``; hand it our parameter groups
        instead, so lr_overrides are honoured there too."""
        model = self.model
        if not isinstance(model, BaseTask):
            return super()._add_configure_optimizers_method_to_model(subcommand)
        model.parameters = model.optimizer_param_groups  # type: ignore[method-assign]
        try:
            super()._add_configure_optimizers_method_to_model(subcommand)
        finally:
            del model.parameters

    # -- running ---------------------------------------------------------------------------------------------
    def _preflight(self, subcommand: str) -> None:
        if getattr(self.model, "predict_only", False) and subcommand != "predict":
            raise ConfigError(f"{type(self.model).__name__} only predicts (it writes outputs, it has nothing to "
                              f"train or score); run terramind-ft predict, not {subcommand}", key="model.class_path")
        ckpt = self._section().get("ckpt_path")
        if ckpt and self._ckpt_shapes is not None:
            check_weights_fit(ckpt, self._ckpt_shapes, self.model)
            self._ckpt_shapes = None
        check_band_agreement(self)
        if subcommand == "fit":
            check_monitors(self)
        if subcommand == "predict" and isinstance(self.model, BaseTask):
            if ckpt:
                self.model.weights_provenance = f"checkpoint {ckpt}"
            else:
                self.model.weights_provenance = UNTRAINED
                log.warning("warning: predicting without --ckpt_path: the decoder and head have random weights (the "
                            "backbone too unless it is pretrained), so the outputs are NOT meaningful; they are "
                            "tagged TERRAMIND_FT_WEIGHTS=untrained. Give --ckpt_path best or a .ckpt file")

    def _run_subcommand(self, subcommand: str) -> None:
        self._preflight(subcommand)
        if subcommand != "fit":
            with stop_at_once():
                super()._run_subcommand(subcommand)
            return
        run_dir = Path(self.trainer.default_root_dir)
        section = self._section()
        lock = RunLock(run_dir) if rank_zero_only.rank == 0 else None
        if lock is not None:
            lock.acquire()
        try:
            if rank_zero_only.rank == 0:
                claim_for_fit(run_dir, resuming=bool(section.get("ckpt_path")), overwrite=bool(section.get("overwrite")))
            stop = GracefulFitStop(self.trainer)
            try:
                with stop:
                    super()._run_subcommand(subcommand)
            except SystemExit as exit_:  # Lightning's SIGTERMException, raised between batches
                if stop.received is None or isinstance(exit_, Interrupted):
                    raise
                last = run_dir / CHECKPOINT_DIR / f"{LAST}.ckpt"
                raise Interrupted(stop.received, f"{last} saved; resume with --ckpt_path last" if last.is_file()
                                  else "no checkpoint was saved yet") from None
            self._closing_line(run_dir)
        finally:
            if lock is not None:
                lock.release()

    def _closing_line(self, run_dir: Path) -> None:
        if not self.trainer.is_global_zero:
            return
        best = next((c for c in self.trainer.callbacks if isinstance(c, ModelCheckpoint) and c.monitor), None)
        last = next((c for c in self.trainer.callbacks if isinstance(c, LastCheckpoint)), None)
        parts = [f"fit done: {self.trainer.current_epoch} epoch(s), {self.trainer.global_step} step(s)"]
        if best is not None and best.best_model_path:
            score = best.best_model_score
            parts.append(f"best {best.monitor} {float(score):.4f} -> {best.best_model_path}" if score is not None
                         else f"best -> {best.best_model_path}")
        if last is not None and last.path.is_file():
            parts.append(f"last -> {last.path}")
        log.info("; ".join(parts))
        note = random_start_note(self.model, resumed=bool(self._section().get("ckpt_path")))
        if note:
            log.info(note)


# What pretrained weights give, to set a random-weight segmentation run's score against: the TerraMind paper's
# fine-tuning figure on Sen1Floods11 (test split, PANGAEA protocol, mIoU over 2 classes). Other tasks get no number:
# a flood mIoU says nothing about a classification or regression score.
PRETRAINED_REFERENCE = ("for scale, TerraMind v1 base fine-tuned on Sen1Floods11 reaches test mIoU 0.906 (the "
                        "paper's figure)")


def random_start_note(task: Any, resumed: bool = False) -> str | None:
    """One line when the backbone started from random weights: scores are then far from what TerraMind does, and
    the user should know how to get the pretrained weights. None when it started from a checkpoint."""
    encoder = getattr(getattr(task, "model", None), "encoder", None)
    if encoder is None or resumed or not hasattr(encoder, "load_report") or encoder.load_report is not None:
        return None
    size = getattr(encoder, "size", None)
    repo = getattr(size, "hf_repo_id", None)
    source = f"the Hugging Face repo {repo}" if repo else "Hugging Face"
    reference = f"{PRETRAINED_REFERENCE}. " if getattr(task, "task", None) == "segmentation" else ""
    return (f"note: the backbone started from random weights, so these scores say little about TerraMind; "
            f"{reference}Start from the pretrained weights with "
            f"model.init_args.model_args.backbone_pretrained: true (downloads from {source}, once) or "
            "backbone_ckpt_path: a local .pt/.safetensors file")


def _cli_kwargs() -> dict[str, Any]:
    return dict(
        model_class=LightningModule, datamodule_class=LightningDataModule, subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_callback=RunFolderConfig, save_config_kwargs={"overwrite": True},
        # One sanity-check batch (Lightning's default is 2): it runs the validation code once before the first
        # epoch, which is what catches its errors; the second batch only doubled the wait for the first step.
        trainer_defaults={"precision": default_precision(), "num_sanity_val_steps": 1}, seed_everything_default=0,
        parser_kwargs={"version": _version(), "exit_on_error": False, "allow_abbrev": False}, auto_configure_optimizers=True,
    )


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"terramind-ft {version('terramind-ft')}"
    except PackageNotFoundError:  # running from a source tree that is not installed
        return "terramind-ft (not installed)"


def build_cli(args: list[str], run: bool = False, backbone_weights: bool = True) -> TerraMindCLI:
    """Parse ``args`` and instantiate model, datamodule and trainer (``run=True``: also run the subcommand
    that ``args`` starts with). With ``run=False`` a leading subcommand is accepted and ignored.
    ``backbone_weights=False``: build the backbone without the config's pretrained download or backbone file
    (the caller loads every weight itself)."""
    args = list(args)
    subcommand = args[0] if args and args[0] in SUBCOMMANDS else None
    if not run and subcommand:
        args = args[1:]
    if run and subcommand is None and not any(a in ("-h", "--help", "--version") for a in args):
        raise ConfigError(f"give a subcommand first: {', '.join(SUBCOMMANDS)}", key="subcommand")
    configure_logging()
    args = prepare_args(args, subcommand if run else None)
    # sys.argv stays the user's command: Lightning's DDP launcher starts the other ranks by running it again
    # (LightningCLI reads only ``args``).
    try:
        return TerraMindCLI(args=args, run=run, backbone_weights=backbone_weights, **_cli_kwargs())
    except Exception as err:  # jsonargparse wraps our typed errors in "Does not validate ..." unions
        cause = find_in_chain(err, TerraMindFTError)
        if cause is not None and cause is not err:
            raise cause from None
        if isinstance(err, ArgumentError):
            key, message = summarize_jsonargparse_error(str(err))
            raise ConfigError(message, key=key) from None
        raise


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


def run_lightning_cli(argv: list[str]) -> int:
    """``terramind-ft fit|validate|test|predict ...``; errors are reported by :mod:`terramind_ft.cli.report`."""
    try:
        build_cli(list(argv), run=True)
    except SystemExit as exit_:  # --help, --print_config, --version
        if exit_.code not in (0, None) or isinstance(exit_, Interrupted):
            raise
    return 0
