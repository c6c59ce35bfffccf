"""UNetDecoder: a U-Net decoder over a feature pyramid, built from smp's ``UnetDecoderBlock``.

Input: a fine-to-coarse list of maps (e.g. LearnedInterpolateToPyramidal's ``[H/4, H/8, H/16, H/32]``).
The coarsest map is upsampled step by step, each step fused with the next finer map; one last block
(no skip) upsamples x2 more, so ``len(channels) == len(features)`` blocks in all and no level is lost.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from segmentation_models_pytorch.decoders.unet.decoder import UnetDecoderBlock
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
        skips = embed_dim[-2::-1] + [0]  # next finer map at each step; none for the last x2 block
        ins = [embed_dim[-1]] + channels[:-1]
        self.blocks = nn.ModuleList(
            UnetDecoderBlock(i, s, o, use_norm=use_norm, attention_type=attention_type,
                             interpolation_mode=interpolation_mode)
            for i, s, o in zip(ins, skips, channels, strict=True)
        )
        self.out_channels = channels[-1]

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        skips = features[-2::-1]
        x = features[-1]
        for i, block in enumerate(self.blocks):
            if i < len(skips):
                skip = skips[i]
                x = block(x, skip.shape[-2], skip.shape[-1], skip_connection=skip)
            else:
                x = block(x, x.shape[-2] * 2, x.shape[-1] * 2)
        return x
