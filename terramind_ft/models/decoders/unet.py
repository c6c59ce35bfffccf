"""UNetDecoder: smp's U-Net decoder over a feature pyramid, the way TerraTorch wires it.

Input: a fine-to-coarse list of maps (e.g. LearnedInterpolateToPyramidal's ``[H/4, H/8, H/16, H/32]``). smp's
``UnetDecoder`` drops its first input (an encoder's full-resolution stem), so the finest map goes in twice and
no level is lost: the coarsest map is upsampled step by step, each step fused with the next finer map, and the
last block refines at the finest map's size. ``len(channels) == len(features)`` blocks; the parameter names
(``decoder.blocks.<i>``) are TerraTorch's, so its checkpoints load.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from segmentation_models_pytorch.decoders.unet.decoder import UnetDecoder
from torch import nn

from terramind_ft.errors import ConfigError
from terramind_ft.registry import DECODER_REGISTRY


@DECODER_REGISTRY.register
class UNetDecoder(nn.Module):
    """U-Net decoder; ``channels`` (``decoder_channels`` in model_args) gives each block's output width."""

    def __init__(self, embed_dim: Sequence[int], channels: Sequence[int] = (512, 256, 128, 64),
                 use_batchnorm: bool | str = True, attention_type: str | None = None,
                 interpolation_mode: str = "nearest"):
        super().__init__()
        embed_dim, channels = [int(c) for c in embed_dim], [int(c) for c in channels]
        if len(channels) != len(embed_dim):
            raise ConfigError(f"UNetDecoder needs one decoder channel per feature map: got {len(channels)} "
                              f"channels {channels} for {len(embed_dim)} maps {embed_dim}", key="decoder_channels")
        use_norm = "batchnorm" if use_batchnorm is True else use_batchnorm
        self.decoder = UnetDecoder(encoder_channels=[embed_dim[0], *embed_dim], decoder_channels=channels,
                                   n_blocks=len(channels), use_norm=use_norm, attention_type=attention_type,
                                   add_center_block=False, interpolation_mode=interpolation_mode)
        self.out_channels = channels[-1]

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        return self.decoder([features[0], *features])
