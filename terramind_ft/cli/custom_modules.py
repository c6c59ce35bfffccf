"""``custom_modules_path``: a folder of the user's modules, imported before the config is parsed.

TerraTorch's key, with the same meaning: the folder is imported as a package named after it (its parent goes on
``sys.path``), then every module in it, so that classes resolve by dotted path (``my_modules.losses.MyLoss``) and
what the modules register (``@DECODER_REGISTRY.register``) is found by name. A relative path is relative to the
working directory, like every other path of a config.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path

from terramind_ft.errors import ConfigError

KEY = "custom_modules_path"


def import_custom_modules(path: str | Path) -> list[str]:
    """Import the package at ``path`` and each module in it; returns the imported module names."""
    folder = Path(path).expanduser().resolve()
    if not folder.is_dir():
        raise ConfigError(f"{path}: no such folder (relative paths start at the working directory {Path.cwd()})",
                          key=KEY)
    name = folder.name
    if not name.isidentifier():
        raise ConfigError(f"the folder name {name!r} is not a Python module name; rename it (letters, digits, _)",
                          key=KEY)
    loaded = sys.modules.get(name)
    if loaded is not None:
        origin = Path(getattr(loaded, "__file__", None) or next(iter(getattr(loaded, "__path__", [])), "") or ".")
        if folder not in (origin, *origin.parents):
            raise ConfigError(f"a module named {name!r} is already imported from {origin}; rename the folder {folder}",
                              key=KEY)
    if str(folder.parent) not in sys.path:
        sys.path.insert(0, str(folder.parent))
    names = []
    for module in [name] + [f"{name}.{m.name}" for m in pkgutil.walk_packages([str(folder)])]:
        try:
            importlib.import_module(module)
        except Exception as err:  # the user's code: say which module and why, keep the traceback for --debug
            raise ConfigError(f"importing {module} from {folder} failed: {type(err).__name__}: {err}", key=KEY) from err
        names.append(module)
    return names


def custom_modules_from(args: list[str], configs: list[dict]) -> str | None:
    """The folder the command line (wins) or the configs (the last one wins) give, or None."""
    for i, arg in enumerate(args):
        if arg == f"--{KEY}" and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(f"--{KEY}="):
            return arg.split("=", 1)[1]
    found = None
    for config in configs:
        if config.get(KEY):
            found = config[KEY]
    return found
