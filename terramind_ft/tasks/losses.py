"""One loss builder for every task: names, combinations, class weights and ``ignore_index``.

``loss`` in a task config is a name (``dice``), a list (equal-weight sum: ``[ce, dice]``) or a mapping of
name to weight (``{ce: 1.0, dice: 0.5}``). Every loss honours ``ignore_index`` (ignored pixels contribute
nothing, whatever the prediction there) and ``class_weights``; where smp has no support (Lovasz class
weights), the loss is computed here. A batch with no valid pixel gives a zero loss, not NaN.

Losses return ``(total, parts)``; ``parts`` holds each named term of a combination for logging.

A loss class of your own (TerraTorch's form): ``loss: my_package.MyLoss``, ``custom_loss: true``,
``custom_loss_kwargs: {...}``; it is called as ``loss(output, target)`` (regression: on the valid pixels).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from torch import nn

from terramind_ft.errors import ConfigError, did_you_mean
from terramind_ft.registry import import_dotted

SEGMENTATION_LOSSES = ("ce", "dice", "focal", "jaccard", "lovasz")
CLASSIFICATION_LOSSES = ("ce", "focal")
REGRESSION_LOSSES = ("mse", "mae", "rmse", "huber")
LOSSES = {"segmentation": SEGMENTATION_LOSSES, "classification": CLASSIFICATION_LOSSES,
          "regression": REGRESSION_LOSSES}


def _zero_like(logits: torch.Tensor) -> torch.Tensor:
    """A zero that keeps the graph (so backward works on a batch without valid pixels)."""
    return logits.sum() * 0.0


class CrossEntropy(nn.Module):
    def __init__(self, ignore_index: int | None, class_weights: torch.Tensor | None):
        super().__init__()
        self.ignore_index = -100 if ignore_index is None else ignore_index
        self.register_buffer("weight", class_weights, persistent=False)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if not (target != self.ignore_index).any():
            return _zero_like(logits)
        weight = None if self.weight is None else self.weight.to(logits.dtype)
        return F.cross_entropy(logits, target, weight=weight, ignore_index=self.ignore_index)


def _lovasz_grad(sorted_fg: torch.Tensor) -> torch.Tensor:
    """Gradient of the Lovasz extension of the Jaccard loss at sorted ground truth (Berman et al. 2018)."""
    total = sorted_fg.sum()
    intersection = total - sorted_fg.cumsum(0)
    union = total + (1.0 - sorted_fg).cumsum(0)
    jaccard = 1.0 - intersection / union
    jaccard[1:] = jaccard[1:] - jaccard[:-1]
    return jaccard


class WeightedLovaszSoftmax(nn.Module):
    """Multiclass Lovasz-softmax with per-class weights (smp's has none); classes absent from the target are
    skipped, as smp's ``classes="present"`` does."""

    def __init__(self, ignore_index: int | None, class_weights: torch.Tensor):
        super().__init__()
        self.ignore_index = ignore_index
        self.register_buffer("weight", class_weights, persistent=False)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        probs = logits.float().softmax(dim=1).movedim(1, -1).reshape(-1, logits.shape[1])
        labels = target.reshape(-1)
        if self.ignore_index is not None:
            valid = labels != self.ignore_index
            probs, labels = probs[valid], labels[valid]
        if labels.numel() == 0:
            return _zero_like(logits)
        losses, weights = [], []
        for c in range(probs.shape[1]):
            fg = (labels == c).float()
            if fg.sum() == 0:
                continue
            errors = (fg - probs[:, c]).abs()
            errors_sorted, order = torch.sort(errors, descending=True)
            losses.append(torch.dot(errors_sorted, _lovasz_grad(fg[order])))
            weights.append(self.weight[c])
        w = torch.stack(weights).to(probs.dtype)
        return (torch.stack(losses) * w).sum() / w.sum()


class _SmpLoss(nn.Module):
    """An smp loss with the zero-valid-pixel guard."""

    def __init__(self, loss: nn.Module, ignore_index: int | None):
        super().__init__()
        self.loss = loss
        self.ignore_index = ignore_index

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.ignore_index is not None and not (target != self.ignore_index).any():
            return _zero_like(logits)
        return self.loss(logits.float(), target)


def _valid_targets(target: torch.Tensor, ignore_index: int | float | None) -> torch.Tensor:
    """Regression target pixels a loss may see: finite and not ``ignore_index``."""
    valid = torch.isfinite(target)
    if ignore_index is not None:
        valid &= target != ignore_index
    return valid


class MaskedRegressionLoss(nn.Module):
    """mse / mae / rmse / huber over pixels whose target is finite and not ``ignore_index``."""

    def __init__(self, name: str, ignore_index: int | float | None):
        super().__init__()
        self.name = name
        self.ignore_index = ignore_index

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        valid = _valid_targets(target, self.ignore_index)
        if not valid.any():
            return _zero_like(pred)
        p, t = pred[valid].float(), target[valid].float()
        if self.name == "mse":
            return F.mse_loss(p, t)
        if self.name == "rmse":
            return F.mse_loss(p, t).sqrt()
        if self.name == "mae":
            return F.l1_loss(p, t)
        return F.huber_loss(p, t)


def build_single_loss(name: str, task: str, ignore_index: int | None = None,
                      class_weights: Sequence[float] | None = None, key: str = "loss") -> nn.Module:
    """One named loss of ``task``."""
    valid = LOSSES[task]
    if name not in valid:
        raise ConfigError(f"unknown {task} loss {name!r}.{did_you_mean(name, valid)} Valid: {', '.join(valid)}",
                          key=key)
    weights = None if class_weights is None else torch.tensor(list(class_weights), dtype=torch.float32)
    if task == "regression":
        if class_weights is not None:
            raise ConfigError("class_weights do not apply to regression losses", key="class_weights")
        return MaskedRegressionLoss(name, ignore_index)
    cw = None if weights is None else weights.tolist()
    if name == "ce":
        return CrossEntropy(ignore_index, weights)
    if name == "focal":
        return _SmpLoss(smp.losses.FocalLoss("multiclass", ignore_index=ignore_index, class_weights=cw), ignore_index)
    if name == "dice":
        return _SmpLoss(smp.losses.DiceLoss("multiclass", ignore_index=ignore_index, class_weights=cw), ignore_index)
    if name == "jaccard":
        return _SmpLoss(smp.losses.JaccardLoss("multiclass", ignore_index=ignore_index, class_weights=cw),
                        ignore_index)
    # lovasz
    if weights is not None:
        return WeightedLovaszSoftmax(ignore_index, weights)
    return _SmpLoss(smp.losses.LovaszLoss("multiclass", ignore_index=ignore_index), ignore_index)


class CombinedLoss(nn.Module):
    """Weighted sum of named losses; returns ``(total, {name: value})``."""

    def __init__(self, losses: dict[str, nn.Module], weights: dict[str, float]):
        super().__init__()
        self.losses = nn.ModuleDict(losses)
        self.weights = dict(weights)

    @property
    def names(self) -> list[str]:
        return list(self.losses)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        parts = {name: loss(pred, target) for name, loss in self.losses.items()}
        total = sum(self.weights[n] * v for n, v in parts.items())
        return total, parts


class CustomLoss(nn.Module):
    """A loss class of the user's (TerraTorch's ``custom_loss: true``): called as ``loss(output, target)``;
    for regression on the valid pixels only (finite, not ``ignore_index``), as the built-in losses are."""

    def __init__(self, loss: nn.Module, task: str, ignore_index: int | float | None):
        super().__init__()
        self.loss = loss
        self.task = task
        self.ignore_index = ignore_index

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.task == "regression":
            valid = _valid_targets(target, self.ignore_index)
            if not valid.any():
                return _zero_like(pred)
            pred, target = pred[valid], target[valid]
        return self.loss(pred, target)


def build_custom_loss(path: Any, kwargs: dict[str, Any] | None, task: str, ignore_index: int | None,
                      class_weights: Sequence[float] | None) -> CombinedLoss:
    """``loss: my_package.MyLoss`` with ``custom_loss: true``: the class, built with ``custom_loss_kwargs``."""
    key = "model.init_args.loss"
    if not isinstance(path, str) or "." not in path:
        raise ConfigError(f"with custom_loss: true, loss is the dotted path of a loss class (my_package.MyLoss), "
                          f"got {path!r}", key=key)
    if class_weights is not None:
        raise ConfigError("class_weights do not reach a custom loss: give them in custom_loss_kwargs",
                          key="model.init_args.class_weights")
    class_name = path.rpartition(".")[2]
    cls = import_dotted(path, key, what="the custom loss ",
                        hint=". Put its module on PYTHONPATH or in the folder of custom_modules_path")
    if kwargs is not None and not isinstance(kwargs, dict):
        raise ConfigError(f"custom_loss_kwargs is a mapping of {path}'s arguments, got {kwargs!r}",
                          key="model.init_args.custom_loss_kwargs")
    try:
        instance = cls(**(kwargs or {}))
    except TypeError as err:
        raise ConfigError(f"{path}({', '.join(f'{k}={v!r}' for k, v in (kwargs or {}).items())}) failed: {err}",
                          key="model.init_args.custom_loss_kwargs") from None
    if not callable(instance):
        raise ConfigError(f"{path} does not make a callable loss", key=key)
    module = instance if isinstance(instance, nn.Module) else _CallableLoss(instance)
    return CombinedLoss({class_name: CustomLoss(module, task, ignore_index)}, {class_name: 1.0})


class _CallableLoss(nn.Module):
    def __init__(self, fn: Any):
        super().__init__()
        self.fn = fn

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.fn(pred, target)


def build_loss(loss: str | Sequence[str] | dict[str, float], task: str, ignore_index: int | None = None,
               class_weights: Sequence[float] | None = None, num_classes: int | None = None) -> CombinedLoss:
    """Build the task's loss from its config value (name, list or {name: weight})."""
    if isinstance(loss, str):
        weights = {loss: 1.0}
    elif isinstance(loss, dict):
        weights = {str(k): float(v) for k, v in loss.items()}
    elif isinstance(loss, Sequence):
        weights = {str(k): 1.0 for k in loss}
    else:
        raise ConfigError(f"loss must be a name, a list of names or a {{name: weight}} mapping, got {loss!r}",
                          key="loss")
    if not weights:
        raise ConfigError("loss is empty", key="loss")
    if class_weights is not None and num_classes is not None and len(class_weights) != num_classes:
        raise ConfigError(f"{len(class_weights)} class_weights for {num_classes} classes", key="class_weights")
    losses = {name: build_single_loss(name, task, ignore_index, class_weights, key=f"loss.{name}")
              for name in weights}
    return CombinedLoss(losses, weights)
