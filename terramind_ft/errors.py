"""Typed errors of terramind-ft.

Every error says what was expected, what was found, where (file, modality, config key) and, where one
exists, how to fix it. Each subclasses the matching built-in so that callers catching ``ValueError`` or
``FileNotFoundError`` keep working.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence


def did_you_mean(name: str, choices: Iterable[str], n: int = 3) -> str:
    """Return a ' Did you mean ...?' suffix for ``name`` among ``choices`` (or '' when nothing is close)."""
    choices = list(choices)
    lowered = {c.lower(): c for c in choices}
    close = difflib.get_close_matches(name.lower(), list(lowered), n=n, cutoff=0.6)
    if not close:
        return ""
    return " Did you mean " + " or ".join(repr(lowered[c]) for c in close) + "?"


def check_known_keys(mapping: Iterable, known: Sequence[str], key: str, what: str) -> None:
    """Refuse the first key of ``mapping`` not in ``known``: ``<key>.<k>: unknown key 'k'. Did you mean ...? <what>
    takes a, b, c``."""
    for k in mapping:
        if k not in known:
            raise ConfigError(f"unknown key {k!r}.{did_you_mean(str(k), known)} {what} takes {', '.join(known)}",
                              key=f"{key}.{k}")


def find_in_chain(err: BaseException | None, kind: type | tuple[type, ...]) -> BaseException | None:
    """The first exception of ``kind`` in ``err``'s cause/context chain (``err`` itself included), or None.
    Libraries wrap errors (jsonargparse in "does not validate" unions, torch.save a full disk in RuntimeError)."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, kind):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


class Notice(UserWarning):
    """Base class of terramind-ft's warnings: something was mapped, assumed or left as it is, and the user
    should know. The CLI prints them as one ``notice: ...`` line (terramind_ft.cli.app)."""


class TerraMindFTError(Exception):
    """Base class of all errors raised on purpose by terramind-ft."""


class ConfigError(TerraMindFTError, ValueError):
    """A configuration value is wrong. ``key`` is the dotted config key when known."""

    def __init__(self, message: str, key: str | None = None):
        self.key = key
        super().__init__(f"{key}: {message}" if key else message)


class UnknownNameError(ConfigError, KeyError):
    """A registry or catalogue lookup failed; the message lists the valid names."""

    def __init__(self, kind: str, name: str, choices: Iterable[str], key: str | None = None):
        choices = sorted(set(choices))
        self.name = name
        self.choices = choices
        plural = kind[:-1] + "ies" if kind.endswith("y") else kind + "s"
        msg = f"unknown {kind} {name!r}.{did_you_mean(name, choices)} Valid {plural}: {', '.join(choices)}"
        super().__init__(msg, key=key)

    def __str__(self) -> str:  # KeyError would otherwise wrap the message in quotes
        return self.args[0]


class ModalityError(ConfigError):
    """A modality name, band list or modality combination cannot be served."""


class CheckpointError(TerraMindFTError, RuntimeError):
    """A checkpoint cannot be found, downloaded or loaded into the model."""


class DataError(TerraMindFTError, ValueError):
    """Input data is missing, unreadable or inconsistent. Messages name the file and the modality."""


class DataNotFoundError(DataError, FileNotFoundError):
    """Files that a split, a root or a grep promised are not there."""


class RasterMismatchError(DataError):
    """Rasters of one sample disagree in size, band count, CRS or transform."""


class InferenceError(TerraMindFTError, RuntimeError):
    """Prediction cannot run or produced an unusable result (model output shape, uncovered pixels, ...)."""


class TrainingError(TerraMindFTError, RuntimeError):
    """Training cannot go on (e.g. a NaN loss); the message names the step and what to try."""
