"""Heads: the last layers that turn decoder output into task outputs.

``SegmentationHead`` -> ``[B, num_classes, h, w]`` logits, ``ClassificationHead`` -> ``[B, num_classes]``
logits, ``RegressionHead`` -> ``[B, 1, h, w]`` values. Keyword names follow TerraTorch's ``head_*`` model_args.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from terramind_ft.errors import ConfigError, did_you_mean
from terramind_ft.registry import HEAD_REGISTRY

_ACTIVATIONS = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "softplus": nn.Softplus,
                "gelu": nn.GELU, "identity": nn.Identity}


@HEAD_REGISTRY.register
class SegmentationHead(nn.Module):
    """Optional 3x3 conv + ReLU layers (``channel_list``), dropout, then a 1x1 conv to ``num_classes``."""

    def __init__(self, in_channels: int, num_classes: int, channel_list: Sequence[int] | None = None,
                 dropout: float = 0.0):
        super().__init__()
        layers: list[nn.Module] = []
        width = in_channels
        for c in channel_list or []:
            layers += [nn.Conv2d(width, c, 3, padding=1), nn.ReLU(inplace=True)]
            width = c
        layers += [nn.Dropout2d(dropout) if dropout else nn.Identity(), nn.Conv2d(width, num_classes, 1)]
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


@HEAD_REGISTRY.register
class ClassificationHead(nn.Module):
    """Spatial mean pooling and a small MLP (``dim_list``) to ``num_classes`` logits.

    Maps ``[B, C, h, w]`` are pooled before the MLP, or after it when ``linear_after_pool`` is false
    (TerraTorch's meaning: the MLP then runs on every position). Vectors ``[B, C]`` go straight in.
    """

    def __init__(self, in_channels: int, num_classes: int, dim_list: Sequence[int] | None = None,
                 dropout: float = 0.0, linear_after_pool: bool = True):
        super().__init__()
        layers: list[nn.Module] = []
        width = in_channels
        for d in dim_list or []:
            layers += [nn.Linear(width, d), nn.ReLU(inplace=True)]
            width = d
        layers += [nn.Dropout(dropout) if dropout else nn.Identity(), nn.Linear(width, num_classes)]
        self.mlp = nn.Sequential(*layers)
        self.linear_after_pool = linear_after_pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 4:
            if self.linear_after_pool:
                x = x.mean(dim=(2, 3))
            else:
                return self.mlp(x.permute(0, 2, 3, 1)).mean(dim=(1, 2))
        return self.mlp(x)


@HEAD_REGISTRY.register
class RegressionHead(nn.Module):
    """Pixelwise regression: optional conv layers, ``learned_upscale_layers`` x2 PixelShuffles, 1 output."""

    def __init__(self, in_channels: int, final_act: str | None = None, learned_upscale_layers: int = 0,
                 channel_list: Sequence[int] | None = None, batch_norm: bool = True, dropout: float = 0.0):
        super().__init__()
        layers: list[nn.Module] = []
        width = in_channels
        for _ in range(learned_upscale_layers):
            layers += [nn.Conv2d(width, width * 4, 3, padding=1), nn.PixelShuffle(2)]
        for c in channel_list or []:
            layers += [nn.Conv2d(width, c, 3, padding=1), nn.BatchNorm2d(c) if batch_norm else nn.Identity(),
                       nn.ReLU(inplace=True)]
            width = c
        layers += [nn.Dropout2d(dropout) if dropout else nn.Identity(), nn.Conv2d(width, 1, 1)]
        if final_act is not None:
            if final_act.lower() not in _ACTIVATIONS:
                raise ConfigError(f"unknown final_act {final_act!r}.{did_you_mean(final_act, _ACTIVATIONS)} "
                                  f"Valid: {', '.join(_ACTIVATIONS)}", key="head_final_act")
            layers.append(_ACTIVATIONS[final_act.lower()]())
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)
