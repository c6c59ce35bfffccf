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
from pathlib import Path

from terramind_ft.errors import CheckpointError, ConfigError

DROPPED_STATE = ("optimizer_states", "lr_schedulers")


def merge_checkpoint(path: str | Path, output: str | Path | None = None) -> Path:
    """Write ``output`` (default ``<path stem>_merged.ckpt`` beside it): ``path`` with its adapters merged."""
    from terramind_ft.cli.checkpoints import AtomicCheckpointIO, load_checkpoint_file
    from terramind_ft.models.peft import merge_peft, trainable_parameters
    from terramind_ft.tasks.base import TASK_CLASS_KEY
    from terramind_ft.tasks.fitted import task_from_checkpoint

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    target = Path(output) if output is not None else path.with_name(f"{path.stem}_merged.ckpt")
    if target.resolve() == path.resolve():
        raise ConfigError("--output is the input checkpoint; give another file name", key="--output")
    checkpoint = load_checkpoint_file(path, weights_only=True)
    if ((checkpoint.get("hyper_parameters") or {}).get("model_args") or {}).get("peft_config") is None:
        raise ConfigError(f"{path} was trained without model_args.peft_config: it has no adapters to merge")
    task, saved, class_path = task_from_checkpoint(path, checkpoint)
    adapted, _ = trainable_parameters(task.model.encoder)
    task.model.encoder = merge_peft(task.model.encoder)
    merged_count = sum(p.numel() for p in task.model.encoder.parameters())

    hyper_parameters = dict(saved)
    hyper_parameters["model_args"] = {k: v for k, v in saved["model_args"].items() if k != "peft_config"}
    if "_class_path" in (checkpoint.get("hyper_parameters") or {}):
        hyper_parameters["_class_path"] = class_path  # the CLI's, read by its _instantiator
    merged = {k: v for k, v in checkpoint.items() if k not in DROPPED_STATE}
    merged[TASK_CLASS_KEY] = class_path
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
