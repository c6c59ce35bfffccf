"""MLPDecoder: one linear layer + activation per position over the concatenated features (TerraTorch's layers).

Every feature is concatenated along the channels, so all must have the same spatial size (one pyramid level, or
several transformer layers reshaped to the token grid). The output width is that of ``features[out_index]``.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
from torch import nn

from terramind_ft.errors import ConfigError
from terramind_ft.registry import DECODER_REGISTRY

# TerraTorch 1.2.11's MLPDecoder takes these arguments and never uses them; a config may set them.
_UNUSED_DEFAULTS = {"channels": 100, "out_dim": 100}


@DECODER_REGISTRY.register
class MLPDecoder(nn.Module):
    """``activation(Linear(sum of widths -> width of features[out_index]))`` at every position, on
    ``[B, C, H, W]`` maps or ``[B, C]`` vectors."""

    def __init__(self, embed_dim: Sequence[int], channels: int = 100, out_dim: int = 100, activation: str = "ReLU",
                 out_index: int = -1):
        super().__init__()
        widths = [int(w) for w in embed_dim]
        for name, value in (("channels", channels), ("out_dim", out_dim)):
            if value != _UNUSED_DEFAULTS[name]:
                warnings.warn(f"decoder_{name}={value!r} has no effect on MLPDecoder: its width is that of the "
                              f"features ({widths[out_index]}), as in TerraTorch, whose MLPDecoder also ignores it",
                              stacklevel=2)
        layer = getattr(nn, activation, None) if isinstance(activation, str) else None
        if not (isinstance(layer, type) and issubclass(layer, nn.Module)):
            raise ConfigError(f"MLPDecoder's activation is a torch.nn layer name (ReLU, GELU, SiLU, Tanh ...), got "
                              f"{activation!r}", key="decoder_activation")
        self.out_channels = widths[out_index]
        self.hidden_layer = nn.Linear(sum(widths), self.out_channels)
        self.activation = layer()

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        sizes = {tuple(f.shape[2:]) for f in features}
        if len(sizes) > 1:
            raise ConfigError(f"MLPDecoder concatenates its features along the channels, but their sizes differ "
                              f"({sorted(sizes)}): give it one pyramid level or same-size maps (necks "
                              f"SelectIndices + ReshapeTokensToImage, no pyramid neck)", key="decoder")
        x = torch.cat(features, dim=1)
        if x.ndim == 4:
            return self.activation(self.hidden_layer(x.permute(0, 2, 3, 1))).permute(0, 3, 1, 2)
        if x.ndim == 2:
            return self.activation(self.hidden_layer(x))
        raise ValueError(f"MLPDecoder takes [B, C, H, W] maps or [B, C] vectors, got {tuple(x.shape)}")
