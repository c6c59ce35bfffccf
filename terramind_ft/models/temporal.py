"""Time series through a single-date backbone: TerraTorch's ``TemporalWrapper`` keys.

``model_args``::

    backbone_use_temporal: true
    backbone_temporal_pooling: mean          # mean | max | concat | diff
    backbone_temporal_n_timestamps: 3        # the number of dates (required for concat; checked for all)

Inputs are ``{modality: [B, C, T, H, W]}`` (the data module's ``time_steps``); a ``[B, C, H, W]`` modality (a DEM,
say) is the same at every date. The T dates run through the backbone as one batch of B x T images, and each
feature level is pooled over time: ``mean`` / ``max`` elementwise, ``concat`` along the feature dimension (the
necks and decoder then see T x the channels), ``diff`` = date 2 - date 1 (two dates only: change detection).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from terramind_ft.errors import ConfigError

POOLINGS = ("mean", "max", "concat", "diff")


class TemporalEncoder(nn.Module):
    """``backbone`` applied to every date of a time series, its features pooled over time."""

    def __init__(self, backbone: nn.Module, pooling: str = "mean", n_timestamps: int | None = None,
                 key: str = "model_args"):
        super().__init__()
        if pooling not in POOLINGS:
            raise ConfigError(f"unknown temporal pooling {pooling!r}; one of {', '.join(POOLINGS)}",
                              key=f"{key}.backbone_temporal_pooling")
        if pooling == "concat" and not n_timestamps:
            raise ConfigError("concat pooling needs the number of dates: set backbone_temporal_n_timestamps",
                              key=f"{key}.backbone_temporal_n_timestamps")
        if pooling == "diff" and n_timestamps not in (None, 2):
            raise ConfigError(f"diff pooling compares two dates, not {n_timestamps}",
                              key=f"{key}.backbone_temporal_n_timestamps")
        if n_timestamps is not None and (not isinstance(n_timestamps, int) or n_timestamps < 1):
            raise ConfigError(f"backbone_temporal_n_timestamps is a count of dates, got {n_timestamps!r}",
                              key=f"{key}.backbone_temporal_n_timestamps")
        self.backbone = backbone
        self.pooling = pooling
        self.n_timestamps = n_timestamps

    def __getattr__(self, name: str) -> Any:  # patch_size, load_report, ... of the wrapped backbone
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("backbone"), name)

    @property
    def out_channels(self) -> list[int]:
        channels = list(self.backbone.out_channels)
        return [c * self.n_timestamps for c in channels] if self.pooling == "concat" else channels

    def _dates(self, x: dict[str, torch.Tensor] | torch.Tensor) -> int:
        tensors = x.values() if isinstance(x, dict) else [x]
        counts = {int(t.shape[2]) for t in tensors if t.is_floating_point() and t.ndim == 5}
        if not counts:
            raise ValueError("backbone_use_temporal: true needs [B, C, T, H, W] inputs (set the data module's "
                             "time_steps); got only single-date tensors")
        if len(counts) > 1:
            raise ValueError(f"the modalities hold different numbers of dates: {sorted(counts)}")
        t = counts.pop()
        if self.n_timestamps is not None and t != self.n_timestamps:
            raise ValueError(f"the inputs hold {t} dates, backbone_temporal_n_timestamps says {self.n_timestamps}")
        if self.pooling == "diff" and t != 2:
            raise ValueError(f"diff pooling compares two dates; the inputs hold {t}")
        return t

    @staticmethod
    def _as_batch(x: torch.Tensor, t: int) -> torch.Tensor:
        """[B, C, T, H, W] -> [B*T, C, H, W] (date-major within a sample); [B, C, H, W] repeated T times."""
        if x.ndim == 5:
            return x.permute(0, 2, 1, 3, 4).reshape(-1, x.shape[1], *x.shape[-2:])
        return x.repeat_interleave(t, dim=0)

    def forward(self, x: dict[str, torch.Tensor] | torch.Tensor) -> Any:
        t = self._dates(x)
        flat = ({k: self._as_batch(v, t) for k, v in x.items()} if isinstance(x, dict) else self._as_batch(x, t))
        features = self.backbone(flat)
        pooled = []
        for f in features:
            f = f.reshape(-1, t, *f.shape[1:])  # [B, T, ...]
            if self.pooling == "mean":
                f = f.mean(dim=1)
            elif self.pooling == "max":
                f = f.amax(dim=1)
            elif self.pooling == "diff":
                f = f[:, 1] - f[:, 0]
            else:  # concat along the feature dimension: tokens [B, N, T*D], maps [B, T*C, H, W]
                f = torch.cat(list(f.unbind(dim=1)), dim=-1 if f.ndim == 4 else 1)
            pooled.append(f)
        like = getattr(features, "_like", None)
        return like(pooled) if callable(like) else pooled
