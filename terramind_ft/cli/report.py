"""Errors reach the user as one readable block, with a documented exit code; tracebacks only on request.

    terramind-ft: checkpoint error: runs/x/checkpoints/last.ckpt is truncated or not a checkpoint (...)
      (the traceback: add --debug, or set TERRAMIND_FT_DEBUG=1)

Every typed error of :mod:`terramind_ft.errors` carries the file / modality / config key and the fix in its
message; OS errors (disk full, read-only, permission) are named with their path and, for a full disk, the
free space. An interruption by a signal exits with 128 + the signal number, as a shell reports it.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import signal
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from terramind_ft.errors import (
    CheckpointError,
    ConfigError,
    DataError,
    InferenceError,
    TerraMindFTError,
    TrainingError,
)

DEBUG_ENV = "TERRAMIND_FT_DEBUG"

EXIT_CODES = {
    "done": 0,
    "unexpected error": 1,
    "config error": 2,
    "data error": 3,
    "checkpoint error": 4,
    "training or inference error": 5,
    "disk or permission error": 6,
    "install error": 7,
}
# and 128 + N when signal N stopped the run: 130 for SIGINT (Ctrl-C), 143 for SIGTERM


class StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time (so redirections and pytest's capture see it), through
    ``tqdm.write`` so that a line written during training (a checkpoint, a file) does not break the progress bar."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm import tqdm

            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # noqa: BLE001 - logging must never raise
            self.handleError(record)

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


class Interrupted(SystemExit):
    """A run stopped by SIGTERM/SIGINT. A ``SystemExit`` so that no ``except Exception`` swallows it; its exit
    code is 128 + the signal number."""

    def __init__(self, signum: int, detail: str = ""):
        self.signum = int(signum)
        self.detail = detail
        super().__init__(128 + self.signum)

    @property
    def signal_name(self) -> str:
        try:
            return signal.Signals(self.signum).name
        except ValueError:
            return f"signal {self.signum}"


def _kind(err: BaseException) -> tuple[str, int]:
    if isinstance(err, ConfigError):
        return "config", 2
    if isinstance(err, DataError):
        return "data", 3
    if isinstance(err, CheckpointError):
        return "checkpoint", 4
    if isinstance(err, (TrainingError, InferenceError)):
        return "training" if isinstance(err, TrainingError) else "inference", 5
    if isinstance(err, TerraMindFTError):
        return "terramind-ft", 1
    return "error", 1


def _existing_parent(path: str | os.PathLike) -> Path:
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def free_space_note(path: str | os.PathLike) -> str:
    """``"123.4 MiB free on /mnt/x"`` for the filesystem that holds ``path`` (or its nearest existing parent)."""
    parent = _existing_parent(path)
    try:
        free = shutil.disk_usage(parent).free
    except OSError:
        return "free space unknown"
    return f"{free / 2**20:.1f} MiB free on {parent}"


def describe_os_error(err: OSError) -> str:
    """One line for an OS error: what happened, to which path, and the way out."""
    path = err.filename or ""
    what = err.strerror or str(err)
    if err.errno == errno.ENOSPC:
        return (f"no space left on the device writing {path} ({free_space_note(path or '.')}); free some space or "
                "write elsewhere (trainer.default_root_dir, --predict_output_dir, --output-dir)")
    if err.errno == errno.EROFS:
        return f"{path} is on a read-only filesystem; write elsewhere (trainer.default_root_dir / output options)"
    if err.errno in (errno.EACCES, errno.EPERM):
        return f"permission denied: {path}; check the folder's owner and mode, or write elsewhere"
    return f"{what}: {path}" if path else what


def _clean_message(err: BaseException) -> str:
    text = str(err).strip()
    # An error raised in a DataLoader worker comes back with the worker's traceback inside its message.
    marker = "Original Traceback (most recent call last):"
    if marker in text:
        last = [line for line in text.splitlines() if line.strip()][-1]
        prefix = f"{type(err).__name__}: "
        text = last.split(prefix, 1)[1] if prefix in last else last
    return text


def _installed_version(distribution: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "(not installed)"


def describe_broken_torchvision(err: BaseException) -> str | None:
    """The install error behind ``operator torchvision::nms does not exist``, or None for any other error.

    torchvision's compiled operators load only with the torch build they were compiled against. PyPI's Linux
    torchvision is a CUDA build: next to PyTorch's CPU build of torch (or a torch of another release) its
    operators fail to load, and the first ``import torchvision`` (by Lightning, torchmetrics, timm) raises this.
    """
    message = str(err)
    if not (isinstance(err, RuntimeError) and "operator torchvision::" in message and "does not exist" in message):
        return None
    return (f"torchvision {_installed_version('torchvision')} does not work with torch "
            f"{_installed_version('torch')}: its compiled operators are built for another torch build (PyPI's "
            "CUDA torchvision next to PyTorch's CPU torch, or two different releases). Install both from one "
            "index, e.g. on a CPU-only machine: pip install --force-reinstall torch torchvision --index-url "
            "https://download.pytorch.org/whl/cpu (README, Install)")


def format_error(err: BaseException) -> tuple[str, int]:
    """(the block to print, exit code) for an error that ends a command."""
    if isinstance(err, OSError) and not isinstance(err, TerraMindFTError):
        return f"terramind-ft: disk error: {describe_os_error(err)}", 6
    broken_install = describe_broken_torchvision(err)
    if broken_install:
        return f"terramind-ft: install error: {broken_install}", 7
    kind, code = _kind(err)
    message = _clean_message(err)
    if kind == "error":
        message = f"{type(err).__name__}: {message}"
        kind = "unexpected"
    return f"terramind-ft: {kind} error: {message}", code


def debug_enabled(debug: bool = False) -> bool:
    return debug or os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


def run_reporting_errors(func: Callable[[], int], debug: bool = False) -> int:
    """Run ``func`` (a command's main); errors become one block on stderr and an exit code (see
    :data:`EXIT_CODES`). With ``debug`` (``--debug`` or ``TERRAMIND_FT_DEBUG=1``) errors are printed with their
    traceback first."""
    if not debug:
        return _run_reporting_errors(func, debug)
    # commands that catch their own errors show tracebacks too; for this call only (main() called from Python,
    # e.g. a notebook, must not leave the next call in debug mode)
    before = os.environ.get(DEBUG_ENV)
    os.environ[DEBUG_ENV] = "1"
    try:
        return _run_reporting_errors(func, debug)
    finally:
        if before is None:
            os.environ.pop(DEBUG_ENV, None)
        else:
            os.environ[DEBUG_ENV] = before


def _run_reporting_errors(func: Callable[[], int], debug: bool) -> int:
    try:
        return int(func() or 0)
    except Interrupted as stop:
        detail = f": {stop.detail}" if stop.detail else ""
        print(f"terramind-ft: interrupted by {stop.signal_name}{detail}", file=sys.stderr)
        return int(stop.code)
    except SystemExit as exit_:
        code = exit_.code
        if code is None or isinstance(code, int):
            return int(code or 0)
        print(code, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("terramind-ft: interrupted by SIGINT", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - this is the one place that turns every error into a message
        if debug_enabled(debug):
            traceback.print_exc()
        block, code = format_error(err)
        print(block, file=sys.stderr)
        if not debug_enabled(debug):
            print(f"  (the traceback: add --debug, or set {DEBUG_ENV}=1)", file=sys.stderr)
        return code
