"""UperNetDecoder: pyramid pooling on the coarsest map + a feature pyramid, fused at the finest level."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from terramind_ft.models.necks import LearnedInterpolateToPyramidal
from terramind_ft.registry import DECODER_REGISTRY


def _conv_bn_relu(cin: int, cout: int, kernel_size: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel_size, padding=kernel_size // 2, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class PyramidPooling(nn.Module):
    """Average-pool the map to each ``scale`` x ``scale`` grid, 1x1 conv, upsample back, concatenate."""

    def __init__(self, in_channels: int, channels: int, pool_scales: Sequence[int], align_corners: bool):
        super().__init__()
        self.align_corners = align_corners
        self.stages = nn.ModuleList(
            # no batch norm on pooled maps: a 1x1 map with batch size 1 has no statistics to normalise with
            nn.Sequential(nn.AdaptiveAvgPool2d(s), nn.Conv2d(in_channels, channels, 1), nn.ReLU(inplace=True))
            for s in pool_scales
        )
        self.bottleneck = _conv_bn_relu(in_channels + len(pool_scales) * channels, channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        pooled = [F.interpolate(stage(x), size=size, mode="bilinear", align_corners=self.align_corners)
                  for stage in self.stages]
        return self.bottleneck(torch.cat([x, *pooled], dim=1))


@DECODER_REGISTRY.register
class UperNetDecoder(nn.Module):
    """UPerNet over a fine-to-coarse map list; output has ``channels`` channels at the finest level.

    ``scale_modules=True`` (kept for TerraTorch configs) first turns four same-size maps into a pyramid, as
    the LearnedInterpolateToPyramidal neck does; prefer the neck.
    """

    def __init__(self, embed_dim: Sequence[int], pool_scales: Sequence[int] = (1, 2, 3, 6), channels: int = 256,
                 align_corners: bool = True, scale_modules: bool = False):
        super().__init__()
        embed_dim = [int(c) for c in embed_dim]
        self.scale = LearnedInterpolateToPyramidal(embed_dim) if scale_modules else None
        if self.scale is not None:
            embed_dim = self.scale.out_channels
        self.align_corners = align_corners
        self.ppm = PyramidPooling(embed_dim[-1], channels, pool_scales, align_corners)
        self.lateral = nn.ModuleList(_conv_bn_relu(c, channels, 1) for c in embed_dim[:-1])
        self.fpn = nn.ModuleList(_conv_bn_relu(channels, channels, 3) for _ in embed_dim[:-1])
        self.fuse = _conv_bn_relu(len(embed_dim) * channels, channels, 3)
        self.out_channels = channels

    def _up(self, x: torch.Tensor, size: torch.Size) -> torch.Tensor:
        return F.interpolate(x, size=size, mode="bilinear", align_corners=self.align_corners)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        if self.scale is not None:
            features = self.scale(features, features[0].shape[-2:])
        levels = [lat(f) for lat, f in zip(self.lateral, features[:-1], strict=True)] + [self.ppm(features[-1])]
        for i in range(len(levels) - 1, 0, -1):  # top-down pathway
            levels[i - 1] = levels[i - 1] + self._up(levels[i], levels[i - 1].shape[-2:])
        outs = [conv(x) for conv, x in zip(self.fpn, levels[:-1], strict=True)] + [levels[-1]]
        size = outs[0].shape[-2:]
        return self.fuse(torch.cat([outs[0]] + [self._up(x, size) for x in outs[1:]], dim=1))
