"""FCNDecoder: learned x2 upsamplings from one feature map (TerraTorch's layers and parameter names).

Each step: a 2x2 transposed conv (x2), a 3x3 conv, a layer norm over the channels, GELU.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from terramind_ft.errors import ConfigError
from terramind_ft.registry import DECODER_REGISTRY


class ChannelLayerNorm(nn.Module):
    """Layer norm over the channels of a ``[B, C, H, W]`` map (``ln``: TerraTorch's parameter name)."""

    def __init__(self, channels: int):
        super().__init__()
        self.ln = nn.LayerNorm(channels, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ln(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2).contiguous()


def _upscale_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.ConvTranspose2d(cin, cout, kernel_size=2, stride=2),
                         nn.Conv2d(cout, cout, kernel_size=3, padding=1), ChannelLayerNorm(cout), nn.GELU())


@DECODER_REGISTRY.register
class FCNDecoder(nn.Module):
    """``num_convs`` x2 upsamplings of ``features[in_index]`` (4 -> x16: a ViT token grid back to pixels)."""

    def __init__(self, embed_dim: Sequence[int], channels: int = 256, num_convs: int = 4, in_index: int = -1):
        super().__init__()
        if num_convs < 1:
            raise ConfigError(f"FCNDecoder needs num_convs >= 1, got {num_convs}", key="decoder_num_convs")
        self.in_index = in_index
        width = int(list(embed_dim)[in_index])
        self.convs = nn.Sequential(*(_upscale_block(width if i == 0 else channels, channels)
                                     for i in range(num_convs)))
        self.out_channels = channels

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        return self.convs(features[self.in_index])
