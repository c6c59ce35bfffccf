"""One registry class for every buildable component (backbones, full models, necks, decoders, heads).

``BACKBONE_REGISTRY.build("terramind_v1_base", modalities=[...])`` finds the builder by name and calls it.
Unknown names and unknown keyword arguments fail with the list of valid ones ("did you mean").
Builders register themselves with a decorator in the module that defines them (timm style); the registries
import :mod:`terramind_ft.models` lazily on first lookup so that ``build`` always sees every entry.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Iterator
from typing import Any

from terramind_ft.errors import ConfigError, UnknownNameError, did_you_mean

# Modules whose import registers entries. Imported on the first lookup of any registry.
_REGISTERING_MODULES = ("terramind_ft.models",)
_imported = False


def _ensure_registered() -> None:
    global _imported
    if not _imported:
        _imported = True
        for module in _REGISTERING_MODULES:
            importlib.import_module(module)


class Registry:
    """A name -> builder table with signature-checked building."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Callable[..., Any]] = {}

    def register(self, name_or_obj: str | Callable | None = None, *, name: str | None = None):
        """Register a class or function, as ``@REG.register``, ``@REG.register("name")`` or ``REG.register(obj)``."""

        def decorator(obj: Callable, entry_name: str | None = None) -> Callable:
            entry_name = entry_name or name or obj.__name__
            if entry_name in self._entries and self._entries[entry_name] is not obj:
                raise ValueError(f"{self.kind} {entry_name!r} is already registered")
            self._entries[entry_name] = obj
            return obj

        if callable(name_or_obj):
            return decorator(name_or_obj)
        if isinstance(name_or_obj, str):
            return lambda obj: decorator(obj, name_or_obj)
        return decorator

    def names(self) -> list[str]:
        _ensure_registered()
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        _ensure_registered()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        _ensure_registered()
        return len(self._entries)

    def get(self, name: str, key: str | None = None) -> Callable[..., Any]:
        _ensure_registered()
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(self.kind, name, self._entries, key=key) from None

    def build(self, name: str, *args: Any, _key: str | None = None, **kwargs: Any) -> Any:
        """Build entry ``name``; every keyword argument must be accepted by the builder."""
        builder = self.get(name, key=_key)
        check_kwargs(builder, kwargs, what=f"{self.kind} {name!r}", key=_key)
        return builder(*args, **kwargs)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {len(self._entries)} entries)"


def accepted_kwargs(fn: Callable) -> tuple[set[str], bool]:
    """Names of keyword arguments ``fn`` (or a class's ``__init__``) accepts, and whether it takes ``**kwargs``."""
    target = fn.__init__ if inspect.isclass(fn) else fn
    params = inspect.signature(target).parameters.values()
    names = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)} - {"self"}
    var_kw = any(p.kind is p.VAR_KEYWORD for p in params)
    return names, var_kw


def check_kwargs(fn: Callable, kwargs: dict[str, Any], what: str, key: str | None = None) -> None:
    """Raise :class:`ConfigError` naming every argument ``fn`` does not accept."""
    names, var_kw = accepted_kwargs(fn)
    if var_kw:
        return
    unknown = [k for k in kwargs if k not in names]
    if unknown:
        hints = "".join(did_you_mean(k, names) for k in unknown)
        raise ConfigError(
            f"{what} got unexpected argument(s) {', '.join(map(repr, unknown))}.{hints} "
            f"Accepted: {', '.join(sorted(names))}",
            key=key,
        )


BACKBONE_REGISTRY = Registry("backbone")
FULL_MODEL_REGISTRY = Registry("full model")
NECK_REGISTRY = Registry("neck")
DECODER_REGISTRY = Registry("decoder")
HEAD_REGISTRY = Registry("head")


def import_dotted(path: str, key: str | None, what: str = "", hint: str = "") -> Any:
    """The object a dotted path names (``my_package.MyLoss``); a path that does not import is a
    :class:`ConfigError` at ``key``, saying ``what`` it was meant to be and ``hint`` (how to make it importable)."""
    module, _, name = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as err:
        raise ConfigError(f"cannot import {what}{path!r}: {err}{hint}", key=key) from None
