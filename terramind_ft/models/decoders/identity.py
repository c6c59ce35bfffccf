"""IdentityDecoder: passes one feature through (classification heads, linear probing)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from terramind_ft.registry import DECODER_REGISTRY


@DECODER_REGISTRY.register
class IdentityDecoder(nn.Module):
    """Returns ``features[out_index]`` unchanged."""

    def __init__(self, embed_dim: Sequence[int], out_index: int = -1):
        super().__init__()
        self.out_index = out_index
        self.out_channels = int(list(embed_dim)[out_index])

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        return features[self.out_index]
