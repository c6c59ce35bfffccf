"""The ``terramind-ft`` command line.

``fit``/``validate``/``test``/``predict`` are LightningCLI subcommands (see :mod:`terramind_ft.lightning_cli`).
Our own commands (``check``, ``compute-statistics``, ``generate``, ``sweep``) are plain argparse programs,
each living with the code it drives; this module only dispatches, so that ``terramind-ft --help`` stays fast.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Sequence

# command -> ("module:function", one-line help). Each function takes argv (list[str]) and returns an exit code.
EXTRA_COMMANDS: dict[str, tuple[str, str]] = {
    "check": ("terramind_ft.commands.check:main", "build a config, check its data and run one batch"),
    "compute-statistics": (
        "terramind_ft.data.statistics:main",
        "per-modality band mean/std and class frequencies of the train split",
    ),
    "generate": ("terramind_ft.commands.generate:main", "generate modalities from GeoTIFF inputs"),
    "sweep": ("terramind_ft.sweep.cli:main", "run a hyper-parameter sweep locally or on SLURM"),
}

LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")

# Cloud-optimised GeoTIFF best practices (pangeo / torchgeo); users may override them.
GDAL_DEFAULTS = {
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    "AWS_NO_SIGN_REQUEST": "YES",
    "GDAL_MAX_RAW_BLOCK_CACHE_SIZE": "200000000",
    "GDAL_SWATH_SIZE": "200000000",
    "VSI_CURL_CACHE_SIZE": "200000000",
}


def _usage() -> str:
    lines = ["usage: terramind-ft COMMAND [options]", "", "Lightning commands (--config X.yaml, --print_config):"]
    lines += [f"  {c}" for c in LIGHTNING_COMMANDS]
    lines += ["", "terramind-ft commands:"]
    lines += [f"  {name:<20}{help_}" for name, (_, help_) in EXTRA_COMMANDS.items()]
    lines += ["", "Run 'terramind-ft COMMAND --help' for the options of a command."]
    return "\n".join(lines)


def _run_extra(command: str, argv: list[str]) -> int:
    target, _ = EXTRA_COMMANDS[command]
    module_name, func_name = target.split(":")
    func = getattr(importlib.import_module(module_name), func_name)
    return int(func(argv) or 0)


def main(args: Sequence[str] | None = None) -> int:
    """Entry point of the ``terramind-ft`` console script; ``args`` defaults to ``sys.argv[1:]``."""
    argv = list(sys.argv[1:] if args is None else args)
    for k, v in GDAL_DEFAULTS.items():
        os.environ.setdefault(k, v)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    command = argv[0].replace("_", "-") if argv[0].replace("_", "-") in EXTRA_COMMANDS else argv[0]
    if command in EXTRA_COMMANDS:
        return _run_extra(command, argv[1:])
    from terramind_ft.lightning_cli import run_lightning_cli

    run_lightning_cli(argv)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
