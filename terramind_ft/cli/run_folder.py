"""A run folder (``trainer.default_root_dir``, default ``runs/<config name>``) belongs to one run::

    config.yaml            the resolved config of the fit
    config_deploy.yaml     the same, inference-ready (terramind_ft.cli.config.deploy_config)
    checkpoints/best.ckpt  best by the task's monitor; checkpoints/last.ckpt the last epoch (resume)
    checkpoints/metrics.json  written by ``test`` next to the tested checkpoint
    previews/epoch<E>_<i>.png, predictions/, lightning_logs/
    .terramind-ft.lock     while a ``fit`` runs: its PID, host and command

``fit`` in a folder that already holds checkpoints resumes (``--ckpt_path last``), starts over when asked
(``--overwrite true``: the old checkpoints, previews and configs go), or is refused with both ways out; a
second ``fit`` while one runs is refused with the holder's PID.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.cli import SaveConfigCallback

from terramind_ft.cli.checkpoints import CHECKPOINT_DIR
from terramind_ft.cli.config import deploy_config, notice
from terramind_ft.errors import ConfigError
from terramind_ft.io import atomic_write_text

log = logging.getLogger("terramind_ft.cli")

LOCK_FILE = ".terramind-ft.lock"
PREVIEW_DIR = "previews"
RUN_FILES = ("config.yaml", "config_deploy.yaml")


class RunFolderConfig(SaveConfigCallback):
    """Writes config.yaml and config_deploy.yaml into the run folder on fit."""

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


def existing_checkpoints(run_dir: Path) -> list[Path]:
    folder = run_dir / CHECKPOINT_DIR
    return sorted(folder.glob("*.ckpt")) if folder.is_dir() else []


def claim_for_fit(run_dir: Path, resuming: bool, overwrite: bool) -> None:
    """Refuse (or, with ``overwrite``, clear) a run folder that holds another run's checkpoints.

    A folder with Lightning's ``hpc_ckpt_<n>.ckpt`` is the same run after a SLURM requeue: Lightning resumes from
    that file by itself, so the run is resuming even without ``--ckpt_path``."""
    found = existing_checkpoints(run_dir)
    if not found or resuming or (not overwrite and any(run_dir.glob("hpc_ckpt_*.ckpt"))):
        return
    names = ", ".join(p.name for p in found[:4]) + (" ..." if len(found) > 4 else "")
    if not overwrite:
        raise ConfigError(
            f"the run folder {run_dir} already holds the checkpoints of an earlier run ({names}). Resume that run "
            "with --ckpt_path last, start a new one in another folder with --trainer.default_root_dir "
            f"{run_dir.parent / (run_dir.name + '_2')}, or replace it with --overwrite true",
            key="trainer.default_root_dir")
    for path in found:
        path.unlink(missing_ok=True)
    (run_dir / CHECKPOINT_DIR / "metrics.json").unlink(missing_ok=True)
    shutil.rmtree(run_dir / PREVIEW_DIR, ignore_errors=True)
    for name in RUN_FILES:
        (run_dir / name).unlink(missing_ok=True)
    notice(f"--overwrite: removed the earlier run's checkpoints ({names}), previews and configs from {run_dir}")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class RunLock:
    """``<run_dir>/.terramind-ft.lock`` held for the length of a ``fit`` (created exclusively; a lock whose
    process is gone on this host is taken over with a notice; on another host it is honoured)."""

    def __init__(self, run_dir: Path, command: str = "fit"):
        self.path = Path(run_dir) / LOCK_FILE
        self.command = command
        self._held = False

    def _holder(self) -> dict[str, Any]:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}

    def acquire(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        info = {"pid": os.getpid(), "host": socket.gethostname(), "command": " ".join(sys.argv) or self.command,
                "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                holder = self._holder()
                pid, host = holder.get("pid"), holder.get("host")
                if isinstance(pid, int) and (host != socket.gethostname() or _pid_alive(pid)):
                    raise ConfigError(
                        f"the run folder {self.path.parent} is in use by another terramind-ft {self.command} (PID "
                        f"{pid} on {host}, started {holder.get('started', '?')}); wait for it to finish, stop it, or "
                        "use another trainer.default_root_dir. If that process is gone, delete "
                        f"{self.path}", key="trainer.default_root_dir") from None
                notice(f"{self.path}: the run that held it (PID {pid}) is gone; taking the folder over")
                self.path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(info, f)
            self._held = True
            return self
        raise ConfigError(f"cannot lock {self.path}", key="trainer.default_root_dir")

    def release(self) -> None:
        if self._held:
            if self._holder().get("pid") == os.getpid():
                self.path.unlink(missing_ok=True)
            self._held = False

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()
