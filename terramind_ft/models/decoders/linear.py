"""LinearDecoder: one transposed convolution from a feature map straight to class logits (linear probing).

It is its own head (``includes_head``): the factory gives it ``num_classes`` and puts no head after it, as
TerraTorch means it to (the parameter names, ``decoder.conv``, are TerraTorch's). With ``decoder_num_classes``
the task's head follows it, which is what TerraTorch 1.2.11's factory builds (models/factory.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from terramind_ft.errors import ConfigError
from terramind_ft.registry import DECODER_REGISTRY


@DECODER_REGISTRY.register
class LinearDecoder(nn.Module):
    """``features[in_index]`` -> ``num_classes`` maps, upsampled ``upsampling_size`` times by a transposed conv
    whose kernel and stride are ``upsampling_size`` (16 on a ViT token grid: back to pixels)."""

    includes_head = True

    def __init__(self, embed_dim: Sequence[int], num_classes: int, upsampling_size: int | None = None,
                 in_index: int = -1):
        super().__init__()
        if not isinstance(upsampling_size, int) or upsampling_size < 1:
            raise ConfigError(f"LinearDecoder needs an integer upsampling_size >= 1 (the patch size, e.g. 16, "
                              f"brings a token grid back to pixels), got {upsampling_size!r}",
                              key="decoder_upsampling_size")
        self.in_index = in_index
        self.conv = nn.ConvTranspose2d(int(list(embed_dim)[in_index]), num_classes, kernel_size=upsampling_size,
                                       stride=upsampling_size)
        self.out_channels = num_classes

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        return self.conv(features[self.in_index])
