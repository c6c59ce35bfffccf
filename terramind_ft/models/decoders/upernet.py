"""UperNetDecoder: pyramid pooling on the coarsest map + a feature pyramid, fused at the finest level.

Layers and parameter names (``psp_modules``, ``bottleneck``, ``lateral_convs``, ``fpn_convs``, ``fpn_bottleneck``,
each a conv + batch norm + ReLU with ``conv`` / ``norm`` / ``act``) are TerraTorch's, so its checkpoints load.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from terramind_ft.models.necks import LearnedInterpolateToPyramidal
from terramind_ft.registry import DECODER_REGISTRY


class ConvNormAct(nn.Module):
    """Conv (no bias) + batch norm + ReLU.

    A pooled 1x1 map of one sample has no batch statistics: in training, TerraTorch's batch norm raises there
    ("Expected more than 1 value per channel"); this one normalises such a map with its running statistics.
    """

    def __init__(self, cin: int, cout: int, kernel_size: int, inplace: bool = False):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size, padding=kernel_size // 2, bias=False)
        self.norm = nn.BatchNorm2d(cout)
        self.act = nn.ReLU(inplace=inplace)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.norm.training and x.shape[0] * x.shape[2] * x.shape[3] == 1:
            x = F.batch_norm(x, self.norm.running_mean, self.norm.running_var, self.norm.weight, self.norm.bias,
                             training=False, eps=self.norm.eps)
        else:
            x = self.norm(x)
        return self.act(x)


class PyramidPooling(nn.ModuleList):
    """Average-pool the map to each ``scale`` x ``scale`` grid, 1x1 conv, upsample back (one output per scale)."""

    def __init__(self, in_channels: int, channels: int, pool_scales: Sequence[int], align_corners: bool):
        super().__init__(nn.Sequential(nn.AdaptiveAvgPool2d(s), ConvNormAct(in_channels, channels, 1, inplace=True))
                         for s in pool_scales)
        self.align_corners = align_corners

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        size = x.shape[-2:]
        return [F.interpolate(stage(x), size=size, mode="bilinear", align_corners=self.align_corners)
                for stage in self]


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
        self.scale_modules = scale_modules
        if scale_modules:  # the neck's layers, under the decoder's own names (decoder.fpn1..fpn4)
            pyramid = LearnedInterpolateToPyramidal(embed_dim)
            self.fpn1, self.fpn2, self.fpn3, self.fpn4 = pyramid.fpn1, pyramid.fpn2, pyramid.fpn3, pyramid.fpn4
            embed_dim = pyramid.out_channels
        self.align_corners = align_corners
        self.psp_modules = PyramidPooling(embed_dim[-1], channels, pool_scales, align_corners)
        self.bottleneck = ConvNormAct(embed_dim[-1] + len(pool_scales) * channels, channels, 3, inplace=True)
        self.lateral_convs = nn.ModuleList(ConvNormAct(c, channels, 1) for c in embed_dim[:-1])
        self.fpn_convs = nn.ModuleList(ConvNormAct(channels, channels, 3) for _ in embed_dim[:-1])
        self.fpn_bottleneck = ConvNormAct(len(embed_dim) * channels, channels, 3, inplace=True)
        self.out_channels = channels

    def _up(self, x: torch.Tensor, size: torch.Size) -> torch.Tensor:
        return F.interpolate(x, size=size, mode="bilinear", align_corners=self.align_corners)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        if self.scale_modules:
            features = [self.fpn1(features[0]), self.fpn2(features[1]), self.fpn3(features[2]),
                        self.fpn4(features[3])]
        top = self.bottleneck(torch.cat([features[-1], *self.psp_modules(features[-1])], dim=1))
        levels = [lat(f) for lat, f in zip(self.lateral_convs, features[:-1], strict=True)] + [top]
        for i in range(len(levels) - 1, 0, -1):  # top-down pathway
            levels[i - 1] = levels[i - 1] + self._up(levels[i], levels[i - 1].shape[-2:])
        outs = [conv(x) for conv, x in zip(self.fpn_convs, levels[:-1], strict=True)] + [levels[-1]]
        size = outs[0].shape[-2:]
        return self.fpn_bottleneck(torch.cat([outs[0]] + [self._up(x, size) for x in outs[1:]], dim=1))
