"""``terramind-ft merge-lora CKPT [--output OUT]``: fold a PEFT checkpoint's adapters into its weights.

A run trained with ``model_args.peft_config`` saves the backbone with its adapters (``base_layer`` +
``lora_A``/``lora_B`` per targeted layer). For inference the adapters can be merged into the weights they adapt:
the merged checkpoint is a plain model (no ``peft_config`` in its hyper-parameters, no peft needed to load it, the
backbone's usual state-dict names), gives the same outputs up to float rounding, and runs at the plain model's
speed. ``predict --ckpt_path merged.ckpt`` takes it as any other checkpoint.

Optimizer and scheduler states are left out (they belong to the adapters' training); resume training from the
original checkpoint.
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path
from typing import Any

from terramind_ft.errors import CheckpointError, ConfigError

DROPPED_STATE = ("optimizer_states", "lr_schedulers")


def _task_from_checkpoint(checkpoint: dict[str, Any], path: Path) -> Any:
    from terramind_ft.cli.checkpoints import without_weight_sources
    from terramind_ft.cli.keys import _resolve_class

    saved = dict(checkpoint.get("hyper_parameters") or {})
    class_path = saved.pop("_class_path", None)
    task_class = _resolve_class(class_path) if class_path else None
    if task_class is None:
        raise CheckpointError(f"{path} does not say which task it holds (no hyper_parameters._class_path); it was not "
                              "written by terramind-ft fit")
    init_args = {k: copy.deepcopy(v) for k, v in saved.items() if not k.startswith("_")}
    model_args = dict(init_args.get("model_args") or {})
    if model_args.get("peft_config") is None:
        raise ConfigError(f"{path} was trained without model_args.peft_config: it has no adapters to merge")
    init_args["model_args"] = without_weight_sources(model_args)  # every weight is in the checkpoint
    task = task_class(**init_args)
    task.load_state_dict(checkpoint["state_dict"], strict=True)
    return task, saved, class_path


def merge_checkpoint(path: str | Path, output: str | Path | None = None) -> Path:
    """Write ``output`` (default ``<path stem>_merged.ckpt`` beside it): ``path`` with its adapters merged."""
    from terramind_ft.cli.checkpoints import AtomicCheckpointIO, load_checkpoint_file
    from terramind_ft.models.peft import merge_peft, trainable_parameters

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    target = Path(output) if output is not None else path.with_name(f"{path.stem}_merged.ckpt")
    if target.resolve() == path.resolve():
        raise ConfigError("--output is the input checkpoint; give another file name", key="--output")
    checkpoint = load_checkpoint_file(path, weights_only=True)
    task, saved, class_path = _task_from_checkpoint(checkpoint, path)
    adapted, _ = trainable_parameters(task.model.encoder)
    task.model.encoder = merge_peft(task.model.encoder)
    merged_count = sum(p.numel() for p in task.model.encoder.parameters())

    hyper_parameters = dict(saved)
    hyper_parameters["model_args"] = {k: v for k, v in saved["model_args"].items() if k != "peft_config"}
    hyper_parameters["_class_path"] = class_path
    merged = {k: v for k, v in checkpoint.items() if k not in DROPPED_STATE}
    merged["state_dict"] = task.state_dict()
    merged["hyper_parameters"] = hyper_parameters
    AtomicCheckpointIO().save_checkpoint(merged, target)
    print(f"merged {adapted:,} adapter parameters of {path} into the backbone's {merged_count:,} (no peft layers "
          f"left) -> {target}", flush=True)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="terramind-ft merge-lora",
        description="Fold the PEFT/LoRA adapters of a checkpoint into its weights: a plain checkpoint for inference "
                    "(predict --ckpt_path OUT), with the same outputs and no peft needed to load it.")
    parser.add_argument("ckpt_path", help="a checkpoint of a run trained with model_args.peft_config")
    parser.add_argument("--output", "-o", default=None,
                        help="where to write the merged checkpoint (default: <ckpt stem>_merged.ckpt beside it)")
    args = parser.parse_args(argv)
    merge_checkpoint(args.ckpt_path, args.output)
    return 0
