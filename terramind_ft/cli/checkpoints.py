"""Checkpoints a user can trust: ``best.ckpt`` follows the monitor, ``last.ckpt`` is the last epoch (or the
moment a signal stopped the run), every file is written whole or not at all, and ``--ckpt_path`` restores the
model's structure without overriding the settings the user typed.

* :func:`best_checkpoint` -- Lightning's ``ModelCheckpoint`` on the task's monitor, one file, never versioned
  (``best-v1.ckpt`` would make ``--ckpt_path best`` mean an older model).
* :class:`LastCheckpoint` -- ``last.ckpt`` at the end of every training epoch, at the end of training (a run
  stopped by ``max_steps`` before its first validation too), when SIGUSR1 asks for one (requeue), and when
  SIGTERM/SIGINT stops ``fit``. Lightning's ``save_last`` writes it only when the best improves.
* :class:`AtomicCheckpointIO` -- temp file in the checkpoint's own folder, flush + fsync, rename; a full disk
  leaves the previous file intact and names the path and the free space; a truncated file is a
  :class:`CheckpointError` that names it and suggests ``--ckpt_path best``. Hyper-parameters are stored as
  plain types, so every checkpoint loads with ``torch.load(weights_only=True)``.
* :func:`restore_plan` -- what ``--ckpt_path`` takes from the checkpoint (model structure) and what from the
  config and command line (the task's ``run_settings``: tiling, outputs, previews).
"""

from __future__ import annotations

import errno
import inspect
import logging
import os
import pickle
import signal
import threading
import zipfile
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import Checkpoint, ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from terramind_ft.errors import CheckpointError, find_in_chain
from terramind_ft.io import atomic_path, to_plain

log = logging.getLogger("terramind_ft.cli")

CHECKPOINT_DIR = "checkpoints"
BEST, LAST = "best", "last"
# Keys whose value never needs a notice when config and checkpoint differ: the checkpoint holds every weight.
WEIGHT_SOURCE_KEYS = {"backbone_pretrained", "pretrained", "backbone_ckpt_path", "ckpt_path"}
# Init arguments that say what the weights are: the network, its classes and heads.
STRUCTURE_KEYS = {"model_args", "model_factory", "model", "class_names", "aux_heads", "num_classes"}


# ------------------------------------------------------------------------------------------------ files


def _truncated_message(path: str | os.PathLike, err: BaseException) -> str:
    return (f"{path} is truncated or not a checkpoint ({type(err).__name__}: {err}); it was probably cut short by a "
            "kill or a full disk. Use another checkpoint of the run (--ckpt_path best) or train again")


def load_checkpoint_file(path: str | os.PathLike, map_location: Any = "cpu", weights_only: bool | None = True,
                         mmap: bool = False) -> dict[str, Any]:
    """``torch.load`` with errors that name the file: missing, unreadable, truncated or not a checkpoint.
    ``mmap``: map the tensors instead of reading them (for a look at hyper-parameters and shapes only)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist" + (" (it is a folder)" if path.is_dir() else "") +
                              "; give a .ckpt file, or best / last for this run's checkpoints")
    if path.stat().st_size == 0:
        raise CheckpointError(_truncated_message(path, EOFError("the file is empty")))
    try:
        if mmap:
            try:
                return torch.load(path, map_location=map_location, weights_only=weights_only, mmap=True)
            except RuntimeError as err:
                if "mmap" not in str(err):  # legacy (non-zip) files cannot be mapped: read them below
                    raise
        return torch.load(path, map_location=map_location, weights_only=weights_only)
    except PermissionError as err:
        raise CheckpointError(f"cannot read checkpoint {path}: {err.strerror}") from None
    except (EOFError, RuntimeError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError) as err:
        if "Weights only load failed" in str(err):
            raise CheckpointError(f"{path} holds Python objects that torch.load(weights_only=True) refuses; it was not "
                                  "written by terramind-ft. Load it with weights_only=False only if you trust it: "
                                  f"{str(err).splitlines()[0]}") from None
        raise CheckpointError(_truncated_message(path, err)) from None


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's torch.save/torch.load, written atomically in the target's folder (see the module doc)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        checkpoint = dict(checkpoint)
        for key in ("hyper_parameters", "datamodule_hyper_parameters"):
            if key in checkpoint:
                checkpoint[key] = to_plain(checkpoint[key])
        target = Path(path)
        try:
            with atomic_path(target, suffix=".ckpt.partial") as tmp, open(tmp, "wb") as f:  # atomic_path fsyncs
                torch.save(checkpoint, f)
        except (OSError, RuntimeError) as raised:
            from terramind_ft.cli.report import free_space_note

            err = find_in_chain(raised, OSError)  # torch.save turns a full disk into "RuntimeError: unexpected pos"
            if err is None:
                raise
            if err.errno == errno.ENOSPC:
                raise CheckpointError(f"no space left on the device writing {target} ({free_space_note(target)}); "
                                      "the previous file is intact. Free some space or use another "
                                      "trainer.default_root_dir") from None
            raise CheckpointError(f"cannot write checkpoint {target}: {err.strerror or err}") from None

    def load_checkpoint(self, path: str | os.PathLike, map_location: Any = None, weights_only: bool | None = None
                        ) -> dict[str, Any]:
        return load_checkpoint_file(path, map_location=map_location, weights_only=weights_only)


# -------------------------------------------------------------------------------------------- callbacks


class BestCheckpoint(ModelCheckpoint):
    """``<dirpath>/best.ckpt``: the best epoch by ``monitor``, overwritten in place; a run folder that moved
    (copied off a cluster's scratch disk, renamed) resumes with its best score.

    Lightning's ``ModelCheckpoint`` forgets the best score when the folder's path differs from the one saved in
    the checkpoint, and the next validation then replaces ``best.ckpt`` whatever its score. Here the saved state
    follows the folder when its ``best.ckpt`` came along; without that file, this folder's best starts afresh.
    """

    display_name = "ModelCheckpoint"  # what messages call it: it is Lightning's, with one difference

    @property
    def state_key(self) -> str:
        # Lightning's key for a ModelCheckpoint with these settings: checkpoints written before this class existed
        # (and by plain ModelCheckpoint) restore into it
        return super().state_key.replace(type(self).__qualname__, ModelCheckpoint.__qualname__, 1)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        saved_dir = state_dict.get("dirpath")
        if not saved_dir or not self.dirpath or Path(saved_dir) == Path(self.dirpath):
            super().load_state_dict(state_dict)
            return
        here = str(Path(self.dirpath) / f"{self.filename}{self.FILE_EXTENSION}")
        if not Path(here).is_file():
            log.info("notice: resuming in %s, a folder without the run's %s: this folder's best checkpoint starts "
                     "with its first validation", self.dirpath, Path(here).name)
            return
        scores = list((state_dict.get("best_k_models") or {}).values())
        super().load_state_dict({
            **state_dict, "dirpath": self.dirpath, "best_model_path": here, "last_model_path": "",
            "kth_best_model_path": here if state_dict.get("kth_best_model_path") else "",
            "best_k_models": {here: scores[0]} if scores else {}})
        log.info("notice: the run folder moved from %s; resuming with its best %s %s (%s)", Path(saved_dir).parent,
                 self.monitor, _score_text(self.best_model_score), here)


def _score_text(score: Any) -> str:
    return f"{float(score):.4g}" if score is not None else "none yet"


def best_checkpoint(dirpath: str | os.PathLike, monitor: str, mode: str) -> ModelCheckpoint:
    """``<dirpath>/best.ckpt``: the best epoch by ``monitor``, overwritten in place."""
    return BestCheckpoint(dirpath=str(dirpath), filename=BEST, monitor=monitor, mode=mode, save_top_k=1,
                          save_last=False, auto_insert_metric_name=False, enable_version_counter=False)


class LastCheckpoint(Checkpoint):
    """Writes ``<dirpath>/last.ckpt`` after every training epoch (after its validation), at the end of training,
    on SIGUSR1 (at the next batch end; requeue scripts send it) and when a signal stops ``fit``.

    SIGUSR1 under DDP: every rank gets the signal at its own moment, and a checkpoint save is collective, so the
    ranks first agree (an any-reduce of the flag at each batch end) and then all save at the same step. Under
    SLURM with Lightning's auto-requeue on (``train.sbatch``: ``--signal=SIGUSR1@90``), this callback also owns the
    requeue: Lightning's own handler saves at the moment the signal lands, which deadlocks DDP ranks blocked in a
    collective; here rank 0 runs ``scontrol requeue`` after the agreed save and the requeued job resumes from
    last.ckpt.

    A ``Checkpoint`` subclass, so Lightning runs it after the other callbacks of an epoch end: the file holds
    their updated state (the best checkpoint's score among it).
    """

    def __init__(self, dirpath: str | os.PathLike, filename: str = LAST):
        self.dirpath = Path(dirpath)
        self.filename = filename
        self._saved_step: int | None = None
        self._requested = False
        self._requeue = False
        self._previous_usr1: Any = None

    @property
    def path(self) -> Path:
        return self.dirpath / f"{self.filename}.ckpt"

    @property
    def state_key(self) -> str:
        return f"LastCheckpoint{{'filename': {self.filename!r}}}"

    def save(self, trainer: Trainer, why: str = "") -> None:
        if trainer.sanity_checking or trainer.global_step == self._saved_step and self.path.is_file():
            return
        trainer.save_checkpoint(self.path, weights_only=False)  # the full state: it resumes a run
        self._saved_step = trainer.global_step
        if why and trainer.is_global_zero:
            log.info("saved %s (%s, epoch %d, step %d)", self.path, why, trainer.current_epoch, trainer.global_step)

    # SIGUSR1 (a cluster's "save now"): only a flag here; the save happens between two batches.
    def _on_usr1(self, signum: int, frame: Any) -> None:
        self._requested = True
        if callable(self._previous_usr1) and not self._requeue:  # with _requeue we replace Lightning's handler
            self._previous_usr1(signum, frame)

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        from lightning.fabric.plugins.environments import SLURMEnvironment

        environment = getattr(getattr(trainer, "_accelerator_connector", None), "cluster_environment", None)
        self._requeue = isinstance(environment, SLURMEnvironment) and bool(getattr(environment, "auto_requeue", False))
        if hasattr(signal, "SIGUSR1") and threading.current_thread() is threading.main_thread():
            self._previous_usr1 = signal.getsignal(signal.SIGUSR1)
            signal.signal(signal.SIGUSR1, self._on_usr1)

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: Any) -> None:
        requested = self._requested
        if trainer.world_size > 1:  # all ranks or none: the save below is a collective
            requested = bool(trainer.strategy.reduce_boolean_decision(requested, all=False))
        if not requested:
            return
        self._requested = False
        self.save(trainer, "SIGUSR1")
        if self._requeue:
            self._requeue_slurm_job(trainer)

    def _requeue_slurm_job(self, trainer: Trainer) -> None:
        """Rank 0 asks SLURM to requeue this job (it stops the tasks and starts the job again, same id)."""
        trainer.should_stop = True
        if not trainer.is_global_zero:
            return
        import subprocess

        array = os.environ.get("SLURM_ARRAY_JOB_ID")
        job = f"{array}_{os.environ['SLURM_ARRAY_TASK_ID']}" if array else os.environ.get("SLURM_JOB_ID", "")
        if not job:
            return
        result = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True)
        if result.returncode == 0:
            log.info("requeued SLURM job %s; it resumes from %s", job, self.path)
        else:
            log.warning("notice: scontrol requeue %s failed (%s); resume with --ckpt_path last",
                        job, (result.stderr or result.stdout).strip())

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.save(trainer)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.save(trainer)
        self._restore_usr1()

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        # A signal (Lightning's SIGTERMException, our graceful SIGINT) stops between batches: the state is whole.
        # Any other error may have struck mid-step (a NaN loss, a data error): keep the last good file then.
        if isinstance(exception, (SystemExit, KeyboardInterrupt)) and trainer.global_step > 0:
            self.save(trainer, "the run was stopped")
        self._restore_usr1()

    def _restore_usr1(self) -> None:
        if self._previous_usr1 is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGUSR1, self._previous_usr1)
            self._previous_usr1 = None


# ----------------------------------------------------------------------------------------- --ckpt_path


def _defaults(cls: type) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for klass in cls.__mro__:
        init = vars(klass).get("__init__")
        if init is None:
            continue
        try:
            params = inspect.signature(init).parameters.values()
        except (TypeError, ValueError):
            continue
        for p in params:
            if p.default is not p.empty:
                out.setdefault(p.name, p.default)
    return out


def _differences(key: str, user: Any, saved: Any) -> list[tuple[str, Any, Any]]:
    """(dotted key, user value, checkpoint value) of every leaf where the two disagree."""
    if isinstance(user, Mapping) and isinstance(saved, Mapping):
        out = []
        for k in sorted(set(user) | set(saved), key=str):
            if k in WEIGHT_SOURCE_KEYS:
                continue
            if k not in user:
                continue  # the user's config does not mention it: nothing to tell
            out += _differences(f"{key}.{k}", user.get(k), saved.get(k))
        return out
    return [] if to_plain(user) == to_plain(saved) else [(key, user, saved)]


# Init arguments that only shape how training steps run. A checkpoint resumed by ``fit`` brings them back with its
# optimiser state and learning-rate schedule; validate, test and predict never use them.
TRAINING_ONLY_KEYS = {"lr", "optimizer", "optimizer_hparams", "scheduler", "scheduler_hparams", "lr_overrides",
                      "freeze_backbone", "freeze_decoder", "freeze_head"}


def restore_plan(task_class: type, saved: Mapping[str, Any], current: Mapping[str, Any],
                 given: Collection[str] = (), subcommand: str | None = None) -> tuple[dict[str, Any], list[str]]:
    """The task's init arguments for a run from a checkpoint, and a notice per key where the user's config
    disagrees with the checkpoint.

    ``saved``: the checkpoint's hyper-parameters; ``current``: the init arguments the config and the command line
    give now (defaults included); ``given``: the keys the user wrote (config files, command line), so that a value
    typed out, even the default one, is never dropped without a word. The task's ``run_settings`` (tiling,
    outputs, previews) come from ``current``: what the user typed wins. Every other argument comes from the
    checkpoint: it describes the weights, or (``fit``) the saved run that resumes as it was.
    """
    settings = set(getattr(task_class, "run_settings", ()))
    defaults = _defaults(task_class)
    merged = {k: v for k, v in saved.items() if not k.startswith("_")}
    notices = []
    for key, value in current.items():
        if key in settings:
            merged[key] = value
            continue
        if key not in saved or key in WEIGHT_SOURCE_KEYS:
            continue
        if key in TRAINING_ONLY_KEYS and subcommand not in (None, "fit"):
            continue  # no effect on validate / test / predict
        if key not in given and key in defaults and to_plain(value) == to_plain(defaults[key]):
            continue  # the config leaves it at its default: the checkpoint's value is no surprise
        for dotted, user, ckpt in _differences(f"model.init_args.{key}", value, saved[key]):
            if subcommand == "fit" and key not in STRUCTURE_KEYS:
                state = (", its optimiser state and learning-rate schedule included" if key in TRAINING_ONLY_KEYS
                         else "")
                why = (f"a resumed run continues as it was saved{state}; to train with {user!r}, start a new run in "
                       "another trainer.default_root_dir")
            else:
                why = "it describes the weights" if key in STRUCTURE_KEYS else "it is how the weights were trained"
            notices.append(f"{dotted}: the config says {user!r}, the checkpoint was trained with {ckpt!r}; using the "
                           f"checkpoint's ({why})")
    return merged, notices


def saved_task(checkpoint: Mapping[str, Any]) -> tuple[str | None, dict[str, Any], str | None]:
    """What a checkpoint says of its task: (our task's class path, or None when it names none; its saved
    hyper-parameters without ``_class_path``; the TerraTorch class it was written as, or None). A TerraTorch
    checkpoint's class and arguments are mapped as its configs are, and its ``_instantiator`` (TerraTorch's CLI)
    is dropped; ours keeps it, for a rewritten checkpoint (merge-lora) that Lightning loads through our CLI."""
    from terramind_ft.cli.terratorch import TERRATORCH_TASKS, translate_terratorch_checkpoint
    from terramind_ft.tasks.base import task_class_path

    saved = dict(checkpoint.get("hyper_parameters") or {})
    saved.pop("_class_path", None)
    class_path = task_class_path(checkpoint)
    if class_path not in TERRATORCH_TASKS:
        return class_path, saved, None
    saved.pop("_instantiator", None)
    ours, saved = translate_terratorch_checkpoint(class_path, saved)
    return ours, saved, class_path


def state_shapes(checkpoint: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    """Parameter name -> shape of a checkpoint's ``state_dict``."""
    return {k: tuple(v.shape) for k, v in (checkpoint.get("state_dict") or {}).items() if hasattr(v, "shape")}


def check_weights_fit(path: str | os.PathLike, saved: Mapping[str, tuple[int, ...]], model: torch.nn.Module) -> None:
    """Refuse a checkpoint whose weights do not fit ``model`` (missing, unexpected or reshaped parameters)."""
    own = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = [k for k in own if k not in saved]
    unexpected = [k for k in saved if k not in own]
    reshaped = [f"{k} {saved[k]} vs {own[k]}" for k in own if k in saved and saved[k] != own[k]]
    if not (missing or unexpected or reshaped):
        return
    parts = []
    for what, keys in (("missing", missing), ("unexpected", unexpected), ("of another shape", reshaped)):
        if keys:
            parts.append(f"{len(keys)} {what} (e.g. {', '.join(keys[:3])})")
    raise CheckpointError(f"the weights in {path} do not fit the model the config builds: {'; '.join(parts)}. The "
                          "checkpoint belongs to another model: give the checkpoint of this config, or the config it "
                          "was trained with (its run folder's config.yaml)")
