"""The pre-flight check of config keys: an unknown or misspelt key fails with its dotted key and "did you mean",
instead of jsonargparse's long union errors. Also the short class names the configs may use."""

from __future__ import annotations

import functools
import inspect
import re
from typing import Any

import torch
from lightning.pytorch import Trainer
from lightning.pytorch.cli import LightningCLI

import terramind_ft.tasks
from terramind_ft.cli.config import command_line_options, config_paths, importable, walk
from terramind_ft.errors import ConfigError, did_you_mean
from terramind_ft.inference.writers import PredictionWriter
from terramind_ft.io import read_yaml_mapping

SUBCOMMANDS = ("fit", "validate", "test", "predict")
TOP_LEVEL_KEYS = {"seed_everything", "trainer", "model", "data", "optimizer", "lr_scheduler", "predict_output_dir",
                  "out_dtype",
                  "overwrite", "float32_matmul_precision", "custom_modules_path"}


def _resolve_class(path: str) -> type | None:
    """The class for a class_path (dotted, or a short name of ours / Lightning's / torch's), or None."""
    if path in ("torch.optim.lr_scheduler.ReduceLROnPlateau", "ReduceLROnPlateau"):
        return _short_names()["ReduceLROnPlateau"]  # LightningCLI swaps in its subclass that takes ``monitor``
    if "." in path:
        module, _, name = path.rpartition(".")
        try:
            return getattr(__import__(module, fromlist=[name]), name)
        except (ImportError, AttributeError):
            return None
    return _short_names().get(path)


@functools.cache
def _short_names() -> dict[str, type]:
    import lightning.pytorch.callbacks as callbacks
    import lightning.pytorch.loggers as loggers

    from terramind_ft.data.datamodule import GenericMultiModalDataModule

    from lightning.pytorch.cli import ReduceLROnPlateau  # Lightning's, with ``monitor``

    from terramind_ft.data.torchgeo_datamodule import TorchGeoDataModule

    names: dict[str, type] = {"GenericMultiModalDataModule": GenericMultiModalDataModule,
                              "TorchGeoDataModule": TorchGeoDataModule, "ReduceLROnPlateau": ReduceLROnPlateau}
    for module in (terramind_ft.tasks, callbacks, loggers, torch.optim, torch.optim.lr_scheduler):
        for name in dir(module):
            obj = getattr(module, name)
            if inspect.isclass(obj) and name[:1].isupper():
                names.setdefault(name, obj)
    names["PredictionWriter"] = PredictionWriter
    return names


def init_parameters(cls: type) -> tuple[set[str], bool]:
    """Keyword names a class's __init__ takes, following ``**kwargs`` up the MRO; and whether any are free."""
    names: set[str] = set()
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        try:
            params = inspect.signature(vars(klass)["__init__"]).parameters.values()
        except (TypeError, ValueError):
            return names, True
        names |= {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)} - {"self"}
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            return names, False
        if klass is object:
            break
    return names, True


def _check_node(node: dict, key: str, base: str) -> None:
    path = node.get("class_path")
    if not isinstance(path, str):
        return
    cls = _resolve_class(path)
    if cls is None:
        if "." not in path:
            raise ConfigError(f"unknown class {path!r}.{did_you_mean(path, _short_names())} Give a full class path "
                              "or one of the short names", key=f"{key}.class_path")
        return  # an importable-later path (user module): jsonargparse will judge it
    extra = [k for k in node if k not in ("class_path", "init_args", "dict_kwargs")]
    if extra:
        raise ConfigError(f"unexpected key(s) {extra} next to class_path (arguments go under init_args)",
                          key=f"{key}.{extra[0]}")
    names, free = init_parameters(cls)
    if free:
        return
    for arg in node.get("init_args") or {}:
        if arg not in names:
            raise ConfigError(f"{cls.__name__} has no argument {arg!r}.{did_you_mean(arg, names)} Arguments: "
                              f"{', '.join(sorted(names))}", key=f"{key}.init_args.{arg}")


@functools.cache
def _method_keys() -> set[str]:
    """Top-level keys that only exist for a subcommand (ckpt_path, weights_only, verbose, return_predictions)."""
    keys: set[str] = set()
    for sub in SUBCOMMANDS:
        skip = LightningCLI.subcommands()[sub] | {"self"}
        keys |= {p for p in inspect.signature(getattr(Trainer, sub)).parameters if p not in skip}
    return keys


# Options of TerraTorch's CLI that terramind-ft does not take, and what to do instead.
TERRATORCH_CLI_OPTIONS = {
    "output_file_prefix": "outputs are named <input name>_pred.tif (one per input, so several inputs never "
                          "overwrite each other); remove it and rename afterwards if needed",
    "deploy_config_file": "fit always writes config_deploy.yaml beside config.yaml in the run folder; remove it",
}


def check_config_keys(config: dict[str, Any], subcommand: str | None) -> None:
    """Raise :class:`ConfigError` (dotted key + "did you mean") for the first unknown key in ``config``."""
    top = set(TOP_LEVEL_KEYS)
    if subcommand in SUBCOMMANDS:
        skip = LightningCLI.subcommands()[subcommand]
        top |= {p for p in inspect.signature(getattr(Trainer, subcommand)).parameters if p not in skip | {"self"}}
    for k in config:
        if k in TERRATORCH_CLI_OPTIONS and k not in top:
            raise ConfigError(f"TerraTorch's --{k} has no counterpart: {TERRATORCH_CLI_OPTIONS[k]}", key=k)
        if k not in top:
            raise ConfigError(f"unknown top-level key.{did_you_mean(k, top)} Valid: {', '.join(sorted(top))}", key=k)
    trainer_cfg = config.get("trainer") or {}
    if isinstance(trainer_cfg, dict):
        names, _ = init_parameters(Trainer)
        for k in trainer_cfg:
            if k not in names:
                raise ConfigError(f"Trainer has no argument {k!r}.{did_you_mean(k, names)}", key=f"trainer.{k}")
    for key, node in walk(config):
        # only the nodes LightningCLI instantiates; transform entries and model_args are checked by their owners
        if key in ("model", "data", "optimizer", "lr_scheduler") or re.fullmatch(
                r"trainer\.(callbacks|logger|plugins)(\[\d+\])?", key):
            _check_node(node, key, key)


# Classes a config may name whose package is an optional extra of terramind-ft.
OPTIONAL_PACKAGES = {"TensorBoardLogger": ("tensorboard", "tensorboard"), "MLFlowLogger": ("mlflow", "mlflow"),
                     "WandbLogger": ("wandb", None), "CometLogger": ("comet_ml", None),
                     "NeptuneLogger": ("neptune", None)}


def check_optional_packages(config: dict[str, Any]) -> None:
    """A logger whose package is missing is a config error naming the extra to install (before anything runs)."""
    for key, node in walk(config):
        path = node.get("class_path")
        if not isinstance(path, str):
            continue
        name = path.rsplit(".", 1)[-1]
        if name in OPTIONAL_PACKAGES:
            module, extra = OPTIONAL_PACKAGES[name]
            if not importable(module):
                how = f"pip install 'terramind-ft[{extra}]'" if extra else f"pip install {module}"
                raise ConfigError(f"{name} needs the {module!r} package, which is not installed: {how}",
                                  key=f"{key}.class_path")


CLI_FLAGS = {"print_config", "version", "help", "debug"}  # command-line switches, not config keys


def _override_pairs(args: list[str]) -> list[str]:
    """The dotted keys of ``--key=value`` / ``--key value`` overrides on a command line (no ``--config``)."""
    return [o.key for o in command_line_options(args)
            if o.key and not o.key.endswith("+") and "help" not in o.key and o.key not in CLI_FLAGS]


def check_override_keys(args: list[str], config: dict[str, Any], subcommand: str | None) -> None:
    """The key check of config files, for the dotted overrides typed on the command line: a typo gets its
    dotted key and "did you mean" (jsonargparse says only "unrecognized arguments" or "does not validate")."""
    import copy

    for key in _override_pairs(args):
        parts = key.split(".")
        if parts[0] == "trainer" and len(parts) > 2:
            continue  # callbacks/logger entries: jsonargparse's own append and last-entry rules apply
        if parts[0] in ("model", "data", "optimizer", "lr_scheduler") and (len(parts) != 3 or parts[1] != "init_args"):
            continue  # only direct init arguments; deeper values (model_args, ...) are checked by their owners
        probe: dict[str, Any] = {}
        if parts[0] in ("model", "data", "optimizer", "lr_scheduler"):
            node = copy.deepcopy(config.get(parts[0]) or {})
            if not isinstance(node, dict) or "class_path" not in node:
                continue  # the class comes from the command line too: jsonargparse judges
            node["init_args"] = {parts[2]: None}
            probe[parts[0]] = node
        elif parts[0] == "trainer":
            probe["trainer"] = {parts[1]: None} if len(parts) == 2 else {}
        else:
            probe[parts[0]] = None
        try:
            check_config_keys(probe, subcommand)
        except ConfigError as err:
            raise ConfigError(f"{str(err).split(': ', 1)[-1]} (typed on the command line as --{key})",
                              key=err.key) from None


def given_init_keys(args: list[str], section: str = "model") -> set[str]:
    """The init arguments of ``section`` the user wrote, in a config file or as a dotted override: what the
    parsed config cannot tell apart from a default left in place."""
    keys: set[str] = set()

    def add_from(node: Any) -> None:
        if isinstance(node, dict):
            for part in ("init_args", "dict_kwargs"):
                if isinstance(node.get(part), dict):
                    keys.update(node[part])

    for _, path in config_paths(args):
        add_from(read_yaml_mapping(path).get(section))
    for value in _section_values(args, section):  # --model '{class_path: ..., init_args: {...}}' or a file
        add_from(value)
    for key in _override_pairs(args):
        parts = key.split(".")
        if parts[0] != section or len(parts) < 2:
            continue
        if parts[1] in ("init_args", "dict_kwargs"):
            if len(parts) > 2:
                keys.add(parts[2])
        elif parts[1] != "class_path":
            keys.add(parts[1])
    return keys


def _section_values(args: list[str], section: str) -> list[Any]:
    """The values of a whole section given on the command line, ``--model '{...}'`` / ``--model=file.yaml``
    (jsonargparse takes a JSON/YAML mapping or the path of a YAML file there), each read as a mapping."""
    import os

    import yaml

    values = []
    for option in command_line_options(args):
        if option.key != section or option.value is None:
            continue
        if os.path.isfile(option.value):
            values.append(read_yaml_mapping(option.value, key=section))
            continue
        try:
            values.append(yaml.safe_load(option.value))
        except yaml.YAMLError:
            continue  # jsonargparse reports what it cannot read
    return values
