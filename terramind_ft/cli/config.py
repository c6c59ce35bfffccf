"""Config trees and files: walking a config, the ``--config`` files of a command line, and the inference-ready
copy of a resolved config (``config_deploy.yaml``)."""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("terramind_ft.cli")

RUNS_DIR = "runs"


def importable(module: str) -> bool:
    """Whether ``module`` is installed, found without importing it (a logger's package can take seconds)."""
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def notice(message: str) -> None:
    log.warning("notice: %s", message)


def walk(node: Any, key: str = "") -> Iterator[tuple[str, dict]]:
    """Every mapping in a config tree with its dotted key."""
    if isinstance(node, dict):
        yield key, node
        for k, v in node.items():
            yield from walk(v, f"{key}.{k}" if key else str(k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from walk(v, f"{key}[{i}]")


def config_paths(args: list[str]) -> list[tuple[int, str]]:
    """(index in args, path) of every ``-c/--config`` value."""
    out = []
    for i, a in enumerate(args):
        if a in ("-c", "--config") and i + 1 < len(args):
            out.append((i + 1, args[i + 1]))
        elif a.startswith("--config="):
            out.append((i, a.split("=", 1)[1]))
    return out


@dataclass(frozen=True)
class CommandLineOption:
    """One ``--key=value``, ``--key value`` or ``--switch`` of a command line (``-c/--config`` excluded)."""

    index: int  # where it starts in the argument list
    width: int  # 2 when the value is the next argument
    key: str
    value: str | None  # None for a switch


def command_line_options(args: list[str]) -> list[CommandLineOption]:
    """Every option of ``args`` but the config files, in order: one parser for every reader of the command line
    (key checks, the keys a user typed, TerraTorch configs' overrides)."""
    out: list[CommandLineOption] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg in ("-c", "--config"):
            i += 2
            continue
        if not arg.startswith("--") or arg.startswith("--config="):
            i += 1
            continue
        key, eq, value = arg[2:].partition("=")
        if eq:
            out.append(CommandLineOption(i, 1, key, value))
        elif i + 1 < len(args) and not args[i + 1].startswith("--"):
            out.append(CommandLineOption(i, 2, key, args[i + 1]))
        else:
            out.append(CommandLineOption(i, 1, key, None))
        i += out[-1].width
    return out


def deploy_config(config: dict[str, Any]) -> dict[str, Any]:
    """An inference-ready copy of a resolved config: no optimizer / lr_scheduler / ckpt_path / callbacks / logger,
    pretrained weights off (the checkpoint has them)."""
    config = copy.deepcopy(config)
    for k in ("optimizer", "lr_scheduler", "ckpt_path"):
        config.pop(k, None)
    trainer_cfg = config.get("trainer") or {}
    for k in ("callbacks", "logger"):
        trainer_cfg.pop(k, None)
    for _, node in walk(config.get("model") or {}):
        for k in list(node):
            if k in ("backbone_pretrained", "pretrained") and node[k]:
                node[k] = False
            if k == "backbone_ckpt_path":
                node[k] = None
    return config
