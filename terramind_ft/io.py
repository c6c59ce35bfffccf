"""File I/O every command shares: atomic output, reading YAML config files, plain values for checkpoints.

Atomic output: write to a hidden temp file beside the target, then rename it onto the target.

Project standard: no half-written output is ever left behind. A reader (another rank, a resumed run, a GIS
viewer) sees either the previous file or the complete new one, because ``os.replace`` within one folder is
atomic; a crash or an exception leaves at most the old target, never a truncated one and never the temp file.
The temp file is fsynced before the rename and the folder after it, so a power cut cannot leave a renamed but
empty file either.

The temp file is created the way a plain ``open(path, "w")`` creates a file (``O_CREAT | O_EXCL``, mode
``0o666`` filtered by the umask), not with ``tempfile.mkstemp``, whose files are owner-only (0600) and kept
that mode after the rename: previews, GeoTIFFs and metrics files must stay readable by the group/others the
umask allows.
"""

from __future__ import annotations

import enum
import errno
import json
import os
import secrets
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from terramind_ft.errors import ConfigError

# Mode a plain open() asks for; the kernel removes the umask bits from it.
_NEW_FILE_MODE = 0o666
_NAME_ATTEMPTS = 100


def _create_temp_beside(target: Path, suffix: str) -> Path:
    """Create (empty, exclusively) and return ``<folder>/.<name>.<random><suffix>`` next to ``target``."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)
    for _ in range(_NAME_ATTEMPTS):
        tmp = target.parent / f".{target.name}.{secrets.token_hex(4)}{suffix}"
        try:
            fd = os.open(tmp, flags, _NEW_FILE_MODE)
        except FileExistsError:
            continue
        os.close(fd)
        return tmp
    raise FileExistsError(f"no free temporary name for {target} after {_NAME_ATTEMPTS} attempts "
                          f"(clean up stale .{target.name}.* files in {target.parent})")


@contextmanager
def atomic_path(target: str | os.PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temp path beside ``target`` to write the whole output to; on a clean exit it is renamed onto
    ``target``, on any exception (KeyboardInterrupt included) it is deleted and the exception re-raised.

    The parent folder is created. ``suffix`` ends the temp file's name: give the real extension (``".png"``,
    ``".tif"``) when the writer picks its format from it. The temp file exists (empty) when yielded; writers
    overwrite it. Close every handle on it before the block ends.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _create_temp_beside(target, suffix)
    try:
        yield tmp
        fsync_path(tmp)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_path(target.parent)


# fsync errors that only mean "this filesystem or object cannot be synced" (folders on some systems, pipes).
_FSYNC_UNSUPPORTED = {errno.EINVAL, errno.ENOTSUP, errno.EBADF, errno.EACCES, errno.EISDIR}


def fsync_path(path: str | os.PathLike) -> None:
    """Flush a file's (or a folder's: its entries') data to the disk; a no-op where the OS cannot. A real write
    error that only shows at flush time (ENOSPC, EIO, on NFS and other delayed-allocation filesystems) raises."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) * Path(path).is_dir())
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as err:
        if err.errno not in _FSYNC_UNSUPPORTED:
            raise
    finally:
        os.close(fd)


def atomic_write_text(target: str | os.PathLike, text: str, *, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``target`` atomically; returns ``target`` as a Path."""
    target = Path(target)
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding=encoding)
    return target


def atomic_write_json(target: str | os.PathLike, obj: Any, *, indent: int | None = 1) -> Path:
    """Serialise ``obj`` as JSON (before touching the disk, so an unserialisable value writes nothing) and
    write it to ``target`` atomically; returns ``target`` as a Path."""
    return atomic_write_text(target, json.dumps(obj, indent=indent))


def read_yaml_mapping(path: str | os.PathLike, key: str = "config") -> dict[str, Any]:
    """A YAML config file's top-level mapping; a missing, unreadable or non-mapping file is a
    :class:`ConfigError` at ``key`` (the option that named the file)."""
    try:
        with open(path) as f:
            data = yaml.safe_load(f) or {}
    except OSError as err:
        raise ConfigError(f"cannot read config file {path}: {err}", key=key) from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML: {err}", key=key) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of config keys", key=key)
    return data


def to_plain(value: Any) -> Any:
    """``value`` as plain types that ``torch.load(weights_only=True)`` and YAML accept: paths become strings,
    mappings dicts, tuples and sets lists; tensors, numbers, strings, booleans and None stay. Any other object
    becomes its ``str`` (hyper-parameters are a record of the run, not a way to pickle objects)."""
    import torch  # here, not at import time: this module serves light commands too

    if value is None or isinstance(value, (bool, int, float, str, torch.Tensor)):
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, enum.Enum):
        return to_plain(value.value)
    if isinstance(value, Mapping) or hasattr(value, "__dict__") and type(value).__name__ == "Namespace":
        items = value.items() if isinstance(value, Mapping) else vars(value).items()
        return {str(k) if not isinstance(k, (int, str)) else k: to_plain(v) for k, v in items}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_plain(v) for v in value]
    return str(value)


def plain_hyperparameters(module: Any) -> None:
    """Make the hyper-parameters a LightningModule/LightningDataModule saved (``save_hyperparameters``) plain
    (:func:`to_plain`), so that its checkpoints load with ``weights_only=True`` even when the Python API passed
    ``pathlib.Path`` arguments. Lightning keeps two copies (``hparams`` and ``hparams_initial``); both change."""
    for attr in ("_hparams", "_hparams_initial"):
        hparams = getattr(module, attr, None)
        if hparams is not None:
            for k in list(hparams):
                hparams[k] = to_plain(hparams[k])
