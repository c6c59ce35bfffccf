"""Loss classes of a user's own module, for the custom_loss tests (TerraTorch's ``custom_loss: true``): referred
to by dotted path, ``custom_losses.ScaledCrossEntropy``, as a user's config would."""

from __future__ import annotations

import torch


class ScaledCrossEntropy(torch.nn.Module):
    def __init__(self, scale: float = 1.0):
        super().__init__()
        self.scale = scale

    def forward(self, logits, target):
        return self.scale * torch.nn.functional.cross_entropy(logits, target)


class RecordingL1(torch.nn.Module):
    """L1, keeping every target it was given (to see which pixels reach a custom regression loss)."""

    seen: list = []

    def forward(self, pred, target):
        RecordingL1.seen.append(target.detach().clone())
        return (pred - target).abs().mean()
