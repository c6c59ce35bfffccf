"""The ``terramind-ft`` command line.

``fit``/``validate``/``test``/``predict`` are LightningCLI subcommands (:mod:`terramind_ft.cli.app`). Our own
commands (``check``, ``compute-statistics``, ``embed``, ``generate``, ``geolocate``, ``merge-lora``, ``sweep``, ...)
are plain argparse programs, each living with the code it drives. This module only dispatches and turns errors into one readable block
(:mod:`terramind_ft.cli.report`), so that ``terramind-ft --help`` stays fast: nothing heavy is imported here.

The package, one file per concern:

* ``app``         the LightningCLI subclass, :func:`build_cli`, the run of a subcommand
* ``terratorch``  TerraTorch class paths and arguments mapped to ours
* ``keys``        the pre-flight check of config keys ("did you mean")
* ``config``      config files on the command line, the default run folder, the deploy config
* ``run_folder``  config.yaml / config_deploy.yaml, the run lock, one run per folder
* ``checkpoints`` best/last checkpoints, atomic checkpoint files, what ``--ckpt_path`` restores
* ``preflight``   monitors and checkpoints checked before anything is written or trained
* ``signals``     SIGTERM/SIGINT: stop between batches, save last.ckpt in fit, leave no partial output
* ``help``        ``fit --help`` and friends, read from the sources (fast, our keys first)
* ``report``      typed errors -> ``terramind-ft: <kind> error: ...`` and the exit codes
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Sequence
from typing import Any

from terramind_ft.cli.report import DEBUG_ENV, EXIT_CODES, run_reporting_errors

# command -> ("module:function", one-line help). Each function takes argv (list[str]) and returns an exit code.
EXTRA_COMMANDS: dict[str, tuple[str, str]] = {
    "check": ("terramind_ft.commands.check:main", "build a config, check its data and run one batch"),
    "compute-statistics": (
        "terramind_ft.data.statistics:main",
        "per-modality band mean/std and class frequencies of the train split",
    ),
    "embed": ("terramind_ft.commands.embed:main", "TerraMind embeddings of a split's chips (GeoParquet / GeoTIFF)"),
    "few-shot": ("terramind_ft.commands.few_shot:main", "few-shot classification from embeddings (episodes)"),
    "generate": ("terramind_ft.commands.generate:main", "generate modalities from GeoTIFF inputs"),
    "geolocate": ("terramind_ft.commands.geolocate:main", "where an image was taken: location map and top-k"),
    "merge-lora": ("terramind_ft.commands.merge_lora:main", "fold a PEFT/LoRA checkpoint's adapters into its weights"),
    "zero-shot": ("terramind_ft.commands.zero_shot:main", "water maps from generated land cover, scored on labels"),
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
    lines = ["usage: terramind-ft [--debug] COMMAND [options]", "", "Lightning commands (--config X.yaml, --print_config):"]
    lines += [f"  {c}" for c in LIGHTNING_COMMANDS]
    lines += ["", "terramind-ft commands:"]
    lines += [f"  {name:<20}{help_}" for name, (_, help_) in EXTRA_COMMANDS.items()]
    lines += ["", "Run 'terramind-ft COMMAND --help' for the options of a command.", "",
              f"Errors print one block 'terramind-ft: <kind> error: ...'; --debug (anywhere on the line) or "
              f"{DEBUG_ENV}=1 shows the traceback.",
              "Exit codes: " + ", ".join(f"{code} {what}" for what, code in EXIT_CODES.items())
              + ", 128+N stopped by signal N (130 Ctrl-C, 143 SIGTERM)."]
    return "\n".join(lines)


def _run_extra(command: str, argv: list[str]) -> int:
    target, _ = EXTRA_COMMANDS[command]
    module_name, func_name = target.split(":")
    func = getattr(importlib.import_module(module_name), func_name)
    return int(func(argv) or 0)


def _dispatch(argv: list[str]) -> int:
    command = argv[0].replace("_", "-") if argv[0].replace("_", "-") in EXTRA_COMMANDS else argv[0]
    if command in EXTRA_COMMANDS:
        return _run_extra(command, argv[1:])
    if command in LIGHTNING_COMMANDS and any(a in ("-h", "--help") for a in argv[1:]):
        from terramind_ft.cli.help import subcommand_help  # read from the sources: no torch, no Lightning

        print(subcommand_help(command), end="")
        return 0
    if "--help-lightning" in argv[1:]:  # LightningCLI's own (slow, complete) help
        argv = [a if a != "--help-lightning" else "--help" for a in argv]
    from terramind_ft.cli.app import run_lightning_cli

    return run_lightning_cli(argv)


def main(args: Sequence[str] | None = None) -> int:
    """Entry point of the ``terramind-ft`` console script; ``args`` defaults to ``sys.argv[1:]``."""
    argv = list(sys.argv[1:] if args is None else args)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    for k, v in GDAL_DEFAULTS.items():
        os.environ.setdefault(k, v)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    return run_reporting_errors(lambda: _dispatch(argv), debug=debug)


def build_cli(args: list[str], run: bool = False) -> Any:
    """:func:`terramind_ft.cli.app.build_cli` (imported on call, to keep this module light)."""
    from terramind_ft.cli.app import build_cli as _build_cli

    return _build_cli(args, run=run)
