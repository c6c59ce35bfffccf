"""FCNDecoder: learned x2 upsamplings (transposed conv, batch norm, ReLU) from one feature map."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from terramind_ft.registry import DECODER_REGISTRY


@DECODER_REGISTRY.register
class FCNDecoder(nn.Module):
    """``num_convs`` x2 upsamplings of ``features[in_index]`` (4 -> x16: a ViT token grid back to pixels)."""

    def __init__(self, embed_dim: Sequence[int], channels: int = 256, num_convs: int = 4, in_index: int = -1):
        super().__init__()
        self.in_index = in_index
        layers: list[nn.Module] = []
        width = int(list(embed_dim)[in_index])
        for _ in range(num_convs):
            layers += [nn.ConvTranspose2d(width, channels, kernel_size=2, stride=2),
                       nn.BatchNorm2d(channels), nn.ReLU(inplace=True)]
            width = channels
        self.upsample = nn.Sequential(*layers)
        self.out_channels = width

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        return self.upsample(features[self.in_index])
