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


# Layers and parameter names (``head.<i>``) follow TerraTorch's heads, so its checkpoints load and the same config
# builds the same network: optional layers in one block, dropout, the last layer.


@HEAD_REGISTRY.register
class SegmentationHead(nn.Module):
    """Optional 3x3 conv + ReLU layers (``channel_list``), dropout, then a 1x1 conv to ``num_classes``."""

    def __init__(self, in_channels: int, num_classes: int, channel_list: Sequence[int] | None = None,
                 dropout: float = 0.0):
        super().__init__()
        widths = [in_channels, *(channel_list or [])]
        pre_head = nn.Sequential(*(nn.Sequential(nn.Conv2d(a, b, 3, padding=1), nn.ReLU())
                                   for a, b in zip(widths, widths[1:]))) if channel_list else nn.Identity()
        self.head = nn.Sequential(pre_head, nn.Dropout(dropout) if dropout else nn.Identity(),
                                  nn.Conv2d(widths[-1], num_classes, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x)


@HEAD_REGISTRY.register
class ClassificationHead(nn.Module):
    """A small MLP (``dim_list``) to ``num_classes`` logits, and spatial mean pooling.

    On maps ``[B, C, h, w]`` the MLP runs on every position and its outputs are averaged (TerraTorch's default);
    with ``linear_after_pool: true`` the map is averaged first. Vectors ``[B, C]`` go straight in.
    """

    def __init__(self, in_channels: int, num_classes: int, dim_list: Sequence[int] | None = None,
                 dropout: float = 0.0, linear_after_pool: bool = False):
        super().__init__()
        widths = [in_channels, *(dim_list or [])]
        pre_head = nn.Sequential(*(nn.Sequential(nn.Linear(a, b), nn.ReLU())
                                   for a, b in zip(widths, widths[1:]))) if dim_list else nn.Identity()
        self.head = nn.Sequential(pre_head, nn.Dropout(dropout) if dropout else nn.Identity(),
                                  nn.Linear(widths[-1], num_classes))
        self.linear_after_pool = linear_after_pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 2:
            return self.head(x)
        tokens = x.reshape(x.shape[0], x.shape[1], -1).transpose(1, 2)  # [B, positions, C]
        if self.linear_after_pool:
            return self.head(tokens.mean(dim=1))
        return self.head(tokens).mean(dim=1)


class PixelShuffleUpscale(nn.Module):
    """A learned x2 upscaling that keeps the channels: 3x3 conv to 4x channels, pixel shuffle, batch norm, ReLU."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels * 4, kernel_size=3, padding=1)
        self.upscale = nn.PixelShuffle(2)
        self.bn = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.upscale(self.conv(x))))


@HEAD_REGISTRY.register
class RegressionHead(nn.Module):
    """Pixelwise regression: ``learned_upscale_layers`` x2 upscalings, optional conv + batch norm + ReLU layers
    (``channel_list``), dropout, a 1x1 conv to one output, then ``final_act``."""

    def __init__(self, in_channels: int, final_act: str | None = None, learned_upscale_layers: int = 0,
                 channel_list: Sequence[int] | None = None, batch_norm: bool = True, dropout: float = 0.0):
        super().__init__()
        layers: list[nn.Module] = []
        if learned_upscale_layers:
            layers.append(nn.Sequential(*(PixelShuffleUpscale(in_channels) for _ in range(learned_upscale_layers))))
        widths = [in_channels, *(channel_list or [])]
        if channel_list:
            layers.append(nn.Sequential(*(
                nn.Sequential(nn.Conv2d(a, b, 3, padding=1, bias=False),
                              nn.BatchNorm2d(b) if batch_norm else nn.Identity(), nn.ReLU(inplace=True))
                for a, b in zip(widths, widths[1:]))))
        layers += [nn.Dropout2d(dropout), nn.Conv2d(widths[-1], 1, 1)]
        self.head = nn.Sequential(*layers)
        self.final_act: nn.Module = nn.Identity()
        if final_act is not None:
            if final_act.lower() not in _ACTIVATIONS:
                raise ConfigError(f"unknown final_act {final_act!r}.{did_you_mean(final_act, _ACTIVATIONS)} "
                                  f"Valid: {', '.join(_ACTIVATIONS)}", key="head_final_act")
            self.final_act = _ACTIVATIONS[final_act.lower()]()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.final_act(self.head(x))
