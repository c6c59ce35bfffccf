"""Necks: turn the backbone's per-layer token lists into what a decoder eats.

A neck is built with the channel list of its input (``channel_list``) and exposes ``out_channels`` (the
channel list of its output), so necks chain: ``necks: [{name: SelectIndices, indices: [2, 5, 8, 11]},
{name: ReshapeTokensToImage}, {name: LearnedInterpolateToPyramidal}]`` as TerraTorch users write them.

Every neck is called as ``neck(features, grid)``: ``features`` is a list of tensors (``[B, N, D]`` tokens or
``[B, C, h, w]`` maps) and ``grid = (h, w)`` is the backbone's token grid, which is what lets
:class:`ReshapeTokensToImage` handle non-square inputs (TerraTorch guesses a square grid, TT #188/#720).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from terramind_ft.errors import ConfigError
from terramind_ft.registry import NECK_REGISTRY

Grid = tuple[int, int]


class Neck(nn.Module):
    """Base class: ``out_channels`` describes the output list; ``forward(features, grid)`` transforms it."""

    def __init__(self, channel_list: Sequence[int]):
        super().__init__()
        self.in_channels = [int(c) for c in channel_list]
        self.out_channels = list(self.in_channels)

    def forward(self, features: list[torch.Tensor], grid: Grid) -> list[torch.Tensor]:  # pragma: no cover
        raise NotImplementedError


@NECK_REGISTRY.register
class SelectIndices(Neck):
    """Keep the features of the listed layers (negative indices count from the last layer)."""

    def __init__(self, channel_list: Sequence[int], indices: Sequence[int]):
        super().__init__(channel_list)
        n = len(self.in_channels)
        bad = [i for i in indices if not -n <= i < n]
        if bad:
            raise ConfigError(f"SelectIndices: indices {bad} out of range for a backbone with {n} layers "
                              f"(valid: {-n}..{n - 1})")
        self.indices = [int(i) % n for i in indices]
        self.out_channels = [self.in_channels[i] for i in self.indices]

    def forward(self, features: list[torch.Tensor], grid: Grid) -> list[torch.Tensor]:
        return [features[i] for i in self.indices]


@NECK_REGISTRY.register
class ReshapeTokensToImage(Neck):
    """``[B, N, D]`` tokens -> ``[B, D, h, w]`` maps on the backbone's token grid (non-square grids work).

    ``remove_cls_token`` is accepted for TerraTorch configs; TerraMind has no CLS token, so a leading token is
    only dropped when there is exactly one more token than grid cells. ``effective_time_dim`` folds
    ``t`` time steps of tokens into channels (``[B, t*h*w, D] -> [B, D*t, h, w]``).
    """

    def __init__(self, channel_list: Sequence[int], remove_cls_token: bool = False, effective_time_dim: int = 1,
                 h: int | None = None):
        super().__init__(channel_list)
        self.remove_cls_token = remove_cls_token
        self.effective_time_dim = int(effective_time_dim)
        self.h = h
        self.out_channels = [c * self.effective_time_dim for c in self.in_channels]

    def forward(self, features: list[torch.Tensor], grid: Grid) -> list[torch.Tensor]:
        out = []
        t = self.effective_time_dim
        for x in features:
            if x.ndim != 3:
                raise ValueError(f"ReshapeTokensToImage expects [B, N, D] tokens, got shape {tuple(x.shape)}")
            h, w = grid
            if self.h is not None and self.h != h:  # explicit grid height (TerraTorch option) wins
                h, w = self.h, (x.shape[1] // t) // self.h
            cells = t * h * w
            if self.remove_cls_token and x.shape[1] == cells + 1:
                x = x[:, 1:]
            if x.shape[1] != cells:
                raise ValueError(f"ReshapeTokensToImage: {x.shape[1]} tokens do not fit the token grid {h}x{w}"
                                 f" (x{t} time steps)")
            b, _, d = x.shape
            x = x.reshape(b, t, h, w, d).permute(0, 4, 1, 2, 3).reshape(b, d * t, h, w)
            out.append(x.contiguous())
        return out


@NECK_REGISTRY.register
class LearnedInterpolateToPyramidal(Neck):
    """Four same-scale maps -> a pyramid at x4, x2, x1 and /2 of the token grid (ViT -> UNet/UPerNet).

    Channels become ``[C0/4, C1/2, C2, C3]``: level 0 goes through two learned x2 upsamplings (transposed conv,
    batch norm, GELU, transposed conv), level 1 through one transposed conv, level 2 is kept and level 3 is
    max-pooled. Layers and parameter names are TerraTorch's, so its checkpoints load and the same config builds
    the same network.
    """

    def __init__(self, channel_list: Sequence[int]):
        super().__init__(channel_list)
        if len(self.in_channels) != 4:
            raise ConfigError(f"LearnedInterpolateToPyramidal needs exactly 4 feature maps, got "
                              f"{len(self.in_channels)}; put SelectIndices with 4 indices before it")
        c0, c1, c2, c3 = self.in_channels
        self.fpn1 = nn.Sequential(nn.ConvTranspose2d(c0, c0 // 2, kernel_size=2, stride=2), nn.BatchNorm2d(c0 // 2),
                                  nn.GELU(), nn.ConvTranspose2d(c0 // 2, c0 // 4, kernel_size=2, stride=2))
        self.fpn2 = nn.Sequential(nn.ConvTranspose2d(c1, c1 // 2, kernel_size=2, stride=2))
        self.fpn3 = nn.Sequential(nn.Identity())
        self.fpn4 = nn.Sequential(nn.MaxPool2d(kernel_size=2, stride=2))
        self.out_channels = [c0 // 4, c1 // 2, c2, c3]

    def forward(self, features: list[torch.Tensor], grid: Grid) -> list[torch.Tensor]:
        return [self.fpn1(features[0]), self.fpn2(features[1]), self.fpn3(features[2]), self.fpn4(features[3])]


@NECK_REGISTRY.register
class InterpolateToPyramidal(Neck):
    """Non-learned pyramid: level ``i`` of ``n`` is upsampled by ``scale_factor ** (n - i)``, so each level is
    ``scale_factor`` times the next one and the coarsest is ``scale_factor`` times the token grid (TerraTorch's
    scales: the same config gives the same pyramid)."""

    def __init__(self, channel_list: Sequence[int], scale_factor: int = 2, mode: str = "nearest"):
        super().__init__(channel_list)
        self.scale_factor = scale_factor
        self.mode = mode

    def forward(self, features: list[torch.Tensor], grid: Grid) -> list[torch.Tensor]:
        n = len(features)
        return [F.interpolate(x, scale_factor=self.scale_factor ** (n - i), mode=self.mode)
                for i, x in enumerate(features)]


@NECK_REGISTRY.register
class MaxpoolToPyramidal(Neck):
    """Non-learned pyramid: level ``i`` is max-pooled by ``kernel_size ** i``."""

    def __init__(self, channel_list: Sequence[int], kernel_size: int = 2):
        super().__init__(channel_list)
        self.kernel_size = kernel_size

    def forward(self, features: list[torch.Tensor], grid: Grid) -> list[torch.Tensor]:
        out = []
        for i, x in enumerate(features):
            k = self.kernel_size ** i
            out.append(F.max_pool2d(x, kernel_size=k, stride=k) if k > 1 else x)
        return out


@NECK_REGISTRY.register
class AggregateTokens(Neck):
    """Pool the tokens of one layer (``index``) to a vector: ``[B, N, D] -> [B, D]`` (classification).

    ``pooling`` is ``mean``, ``max``, ``min`` or an integer token position (TerraMind has no CLS token, so
    ``CLS`` is refused). ``index=None`` pools every layer instead of one.
    """

    POOLINGS = ("mean", "max", "min")

    def __init__(self, channel_list: Sequence[int], pooling: str | int = "mean", index: int | None = -1):
        super().__init__(channel_list)
        if not (isinstance(pooling, int) or pooling in self.POOLINGS):
            hint = " TerraMind has no CLS token; use mean or max." if str(pooling).upper() == "CLS" else ""
            raise ConfigError(f"AggregateTokens: unknown pooling {pooling!r}; use one of {self.POOLINGS} or a "
                              f"token index.{hint}")
        self.pooling = pooling
        self.index = index
        if index is not None:
            self.out_channels = [self.in_channels[index]]

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 4:  # [B, C, h, w] maps: pool over space
            x = x.flatten(2).transpose(1, 2)
        if isinstance(self.pooling, int):
            return x[:, self.pooling]
        if self.pooling == "mean":
            return x.mean(dim=1)
        return x.amax(dim=1) if self.pooling == "max" else x.amin(dim=1)

    def forward(self, features: list[torch.Tensor], grid: Grid) -> list[torch.Tensor]:
        if self.index is not None:
            return [self._pool(features[self.index])]
        return [self._pool(x) for x in features]


class NeckSequence(nn.ModuleList):
    """Necks applied in order; ``out_channels`` is the last neck's output channel list. Its children are
    numbered (``neck.2.fpn1.0.weight``), as TerraTorch's neck container names them."""

    def __init__(self, necks: Sequence[Neck], channel_list: Sequence[int]):
        super().__init__(necks)
        self.out_channels = list(necks[-1].out_channels) if necks else list(channel_list)

    def forward(self, features: list[torch.Tensor], grid: Grid) -> list[torch.Tensor]:
        for neck in self:
            features = neck(features, grid)
        return list(features)


def build_necks(specs: Sequence[dict] | None, channel_list: Sequence[int], key: str = "necks") -> NeckSequence:
    """Build ``[{name: ..., **kwargs}, ...]`` into a :class:`NeckSequence`; errors name ``key[i]``."""
    necks: list[Neck] = []
    channels = list(channel_list)
    for i, spec in enumerate(specs or []):
        item_key = f"{key}[{i}]"
        if not isinstance(spec, dict) or "name" not in spec:
            raise ConfigError(f"each neck is a mapping with a 'name' (e.g. {{name: SelectIndices, indices: "
                              f"[2, 5, 8, 11]}}), got {spec!r}", key=item_key)
        kwargs = {k: v for k, v in spec.items() if k != "name"}
        try:
            neck = NECK_REGISTRY.build(spec["name"], channel_list=channels, _key=item_key, **kwargs)
        except ConfigError as err:
            if err.key is None:
                raise ConfigError(str(err), key=item_key) from err
            raise
        necks.append(neck)
        channels = neck.out_channels
    return NeckSequence(necks, channel_list)
