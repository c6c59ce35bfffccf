"""A fitted task checkpoint (``fit``'s ``best.ckpt`` / ``last.ckpt``) as a task again, or as its fine-tuned backbone.

``merge-lora`` rebuilds the task to fold its adapters; ``embed``, ``few-shot`` and the ``EmbeddingTask``
(``predict --ckpt_path`` with an embedding config) take the fine-tuned backbone: the checkpoint's own backbone
arguments rebuild it (name, modalities, merge method ...; every weight comes from the checkpoint, nothing is
downloaded) and adapters trained with ``peft_config`` are merged into it, so it is a plain TerraMind encoder.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from torch import nn

from terramind_ft.errors import CheckpointError, ConfigError
from terramind_ft.models.factory import without_weight_sources


def task_from_checkpoint(path: str | Path, checkpoint: dict[str, Any]) -> tuple[Any, dict, str]:
    """(the task with the weights of ``checkpoint``, read from ``path``; its saved hyper-parameters; its class
    path)."""
    from terramind_ft.cli.checkpoints import saved_task
    from terramind_ft.cli.keys import _resolve_class
    from terramind_ft.tasks.base import TASK_CLASS_KEY

    class_path, saved, _ = saved_task(checkpoint)
    task_class = _resolve_class(class_path) if class_path else None
    if task_class is None:
        raise CheckpointError(f"{path} does not say which task it holds (no hyper_parameters._class_path or "
                              f"{TASK_CLASS_KEY}); it was not written by a terramind-ft task")
    init_args = {k: copy.deepcopy(v) for k, v in saved.items() if not k.startswith("_")}
    if "model_args" in init_args:
        init_args["model_args"] = without_weight_sources(dict(init_args["model_args"] or {}))
    task = task_class(**init_args)
    task.load_state_dict(checkpoint["state_dict"], strict=True)
    return task, saved, class_path


def fitted_backbone(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """(the fine-tuned backbone of a fitted task checkpoint, adapters merged, in eval mode without gradients; the
    checkpoint's ``model_args``)."""
    from terramind_ft.cli.checkpoints import load_checkpoint_file
    from terramind_ft.hub import LoadReport

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    checkpoint = load_checkpoint_file(path, weights_only=True)
    if ((checkpoint.get("hyper_parameters") or {}).get("model_args") or {}).get("backbone_use_temporal"):
        # said before the task is built: a multi-date model is not built for nothing
        raise ConfigError(f"{path} was trained with backbone_use_temporal (a multi-date backbone); embeddings of "
                          "single dates come from the plain backbone: embed with the pretrained weights",
                          key="ckpt_path")
    task, saved, class_path = task_from_checkpoint(path, checkpoint)
    model_args = dict(saved.get("model_args") or {})
    encoder = getattr(getattr(task, "model", None), "encoder", None)
    if encoder is None:
        raise CheckpointError(f"{path} holds a {class_path.rsplit('.', 1)[-1]}, which has no backbone to embed with")
    if model_args.get("peft_config") is not None:
        from terramind_ft.models.peft import merge_peft

        encoder = merge_peft(encoder)
    encoder.eval().requires_grad_(False)
    # where the weights came from, for the outputs' provenance (a backbone built without weights reports None);
    # the epoch and step tell a best.ckpt apart from the one a later fit writes at the same path
    when = ", ".join(f"{k} {checkpoint[k]}" for k in ("epoch", "global_step") if k in checkpoint)
    encoder.load_report = LoadReport(
        source=f"{path.resolve()} (fine-tuned {class_path.rsplit('.', 1)[-1]}{', ' + when if when else ''})",
        what="backbone")
    return encoder, model_args
