"""A tiny stand-in for a TerraMind backbone that obeys the BackboneOutput contract (README, "Contracts").

Used by model/task tests that must not depend on the real encoder: per-layer ``[B, N, D]`` tokens with
``.grid`` and ``.image_size``, ``.out_channels`` and ``.patch_size``; dict input ``{modality: [B, C, H, W]}``.
"""

from __future__ import annotations

import torch
from torch import nn

from terramind_ft.registry import BACKBONE_REGISTRY


class FakeBackboneOutput(list):
    grid: tuple[int, int]
    image_size: tuple[int, int]


class FakeViT(nn.Module):
    def __init__(self, modalities=("S2L2A",), in_chans=None, dim=32, depth=4, patch_size=16, pretrained=False):
        super().__init__()
        in_chans = in_chans or {m: 2 for m in modalities}
        self.modalities = list(modalities)
        self.patch_size = patch_size
        self.embed = nn.ModuleDict({m: nn.Conv2d(in_chans.get(m, 2), dim, patch_size, patch_size)
                                    for m in modalities})
        self.blocks = nn.ModuleList(nn.Linear(dim, dim) for _ in range(depth))
        self.out_channels = [dim] * depth

    def forward(self, x):
        if not isinstance(x, dict):
            x = {self.modalities[0]: x}
        h, w = next(iter(x.values())).shape[-2:]
        assert h % self.patch_size == 0 and w % self.patch_size == 0, "the model must pad before the backbone"
        tokens = sum(self.embed[m](v) for m, v in x.items() if m in self.embed)
        grid = tuple(tokens.shape[-2:])
        t = tokens.flatten(2).transpose(1, 2)
        out = FakeBackboneOutput()
        for blk in self.blocks:
            t = t + torch.tanh(blk(t))
            out.append(t)
        out.grid, out.image_size = grid, (h, w)
        return out


def register() -> None:
    if "fake_vit" not in BACKBONE_REGISTRY:
        BACKBONE_REGISTRY.register(FakeViT, name="fake_vit")
