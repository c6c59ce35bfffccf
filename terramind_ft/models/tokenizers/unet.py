"""Patched, token-conditioned diffusion UNet: the decoder of the five DiVAE tokenizers (spec section 6.4).

The noisy image ``[B, C, H, W]`` is space-to-depth patched by 4 (``b c (nh 4) (nw 4) -> b (c 4 4) nh nw``,
channel-major), the FSQ code map ``[B, 5, H/16, W/16]`` is nearest-upsampled to ``(H/4, W/4)`` and
concatenated after it, and a guided-diffusion style UNet predicts the clean patched image, which is
depth-to-space'd back to ``[B, C, H, W]``.

UNet: 256 model channels, channel multipliers (1, 2, 2, 2), 3 residual blocks per level, single-head attention
at downsample rates 4 and 8, 3x3 conv down/up-sampling, time embedding 256 -> 1024. State-dict names follow
the official files: ``time_embed.{0,2}``, ``input_blocks.{0..15}``, ``middle_block.{0,1,2}``,
``output_blocks.{0..15}``, ``out.{0,2}``, and inside residual blocks ``in_layers.{0,2}``, ``emb_layers.1``,
``out_layers.{0,3}``, ``skip_connection``; attention blocks ``norm``, ``qkv``, ``proj_out`` (1x1 Conv1d);
``op`` (downsample conv) and ``conv`` (upsample conv).

The decoder needs ``H/4`` divisible by 8 (three 2x downsamplings), i.e. H and W multiples of 32.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from terramind_ft.errors import DataError

PATCH = 4
MODEL_CHANNELS = 256
CHANNEL_MULT = (1, 2, 2, 2)
NUM_RES_BLOCKS = 3
ATTENTION_RATES = (4, 8)  # downsample factors (inside the patched space) that get an attention block
TIME_EMBED_DIM = 4 * MODEL_CHANNELS
GROUPS = 32
SIZE_MULTIPLE = PATCH * 2 ** (len(CHANNEL_MULT) - 1)  # 32 px


# ---------------------------------------------------------------------------------------------------- blocks


class GroupNorm32(nn.GroupNorm):
    """GroupNorm(32, eps 1e-5) evaluated in float32 whatever the input dtype."""

    def __init__(self, channels: int):
        super().__init__(GROUPS, channels)

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.float()).type(x.dtype)


def timestep_embedding(t: Tensor, dim: int = MODEL_CHANNELS, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding ``[len(t), dim]`` = [cos(t f), sin(t f)], f_i = exp(-ln(max_period) i / (dim/2))."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t[:, None].float() * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class ResBlock(nn.Module):
    """GN -> SiLU -> conv3x3, + Linear(SiLU(emb)), GN -> SiLU -> Dropout -> conv3x3, + skip (identity / 1x1)."""

    def __init__(self, channels: int, out_channels: int | None = None, emb_dim: int = TIME_EMBED_DIM,
                 dropout: float = 0.0):
        super().__init__()
        out_channels = out_channels or channels
        self.in_layers = nn.Sequential(GroupNorm32(channels), nn.SiLU(),
                                       nn.Conv2d(channels, out_channels, 3, padding=1))
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, out_channels))
        self.out_layers = nn.Sequential(GroupNorm32(out_channels), nn.SiLU(), nn.Dropout(dropout),
                                        nn.Conv2d(out_channels, out_channels, 3, padding=1))
        self.skip_connection = (nn.Identity() if out_channels == channels
                                else nn.Conv2d(channels, out_channels, 1))

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.in_layers(x)
        h = h + self.emb_layers(emb).type(h.dtype)[:, :, None, None]
        return self.skip_connection(x) + self.out_layers(h)


class AttentionBlock(nn.Module):
    """Single-head spatial self-attention: GN -> qkv (1x1) -> softmax(q k / sqrt(C)) v -> proj_out -> + x.

    q and k are each scaled by C^-1/4 and the softmax runs in float32, as in the reference ("legacy" qkv order
    [all q | all k | all v], which with one head is the plain channel split).
    """

    def __init__(self, channels: int):
        super().__init__()
        self.norm = GroupNorm32(channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj_out = nn.Conv1d(channels, channels, 1)

    def forward(self, x: Tensor, emb: Tensor | None = None) -> Tensor:
        b, c, h, w = x.shape
        flat = x.reshape(b, c, h * w)
        q, k, v = self.qkv(self.norm(flat)).split(c, dim=1)
        scale = 1.0 / math.sqrt(math.sqrt(c))
        weight = torch.einsum("bct,bcs->bts", q * scale, k * scale)
        weight = torch.softmax(weight.float(), dim=-1).type(weight.dtype)
        attended = torch.einsum("bts,bcs->bct", weight, v)
        return (flat + self.proj_out(attended)).reshape(b, c, h, w)


class Downsample(nn.Module):
    """3x3 conv with stride 2."""

    def __init__(self, channels: int):
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor, emb: Tensor | None = None) -> Tensor:
        return self.op(x)


class Upsample(nn.Module):
    """Nearest 2x upsampling, then 3x3 conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor, emb: Tensor | None = None) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class TimestepSequential(nn.Sequential):
    """A sequence of blocks that all receive the time embedding (convs ignore it)."""

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:  # type: ignore[override]
        for layer in self:
            x = layer(x) if isinstance(layer, nn.Conv2d) else layer(x, emb)
        return x


# ---------------------------------------------------------------------------------------------------- model


class PatchedDiffusionUNet(nn.Module):
    """``forward(x_t [B, C, H, W], t, cond [B, D, h, w]) -> x0_hat [B, C, H, W]`` ("sample" prediction).

    ``t`` is one integer diffusion timestep shared by the whole batch (a Python number or a 0-d / 1-element
    tensor), as in the reference sampler, or a ``[B]`` tensor of per-sample timesteps (training).
    """

    def __init__(self, in_channels: int, cond_channels: int, patch_size: int = PATCH,
                 model_channels: int = MODEL_CHANNELS, channel_mult: tuple[int, ...] = CHANNEL_MULT,
                 num_res_blocks: int = NUM_RES_BLOCKS, attention_rates: tuple[int, ...] = ATTENTION_RATES,
                 dropout: float = 0.0):
        super().__init__()
        self.in_channels = in_channels
        self.cond_channels = cond_channels
        self.patch_size = patch_size
        self.model_channels = model_channels
        self.size_multiple = patch_size * 2 ** (len(channel_mult) - 1)
        emb_dim = 4 * model_channels
        self.time_embed = nn.Sequential(nn.Linear(model_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))

        ch = model_channels * channel_mult[0]
        self.input_blocks = nn.ModuleList(
            [TimestepSequential(nn.Conv2d(in_channels * patch_size**2 + cond_channels, ch, 3, padding=1))])
        skip_channels = [ch]
        rate = 1
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                layers: list[nn.Module] = [ResBlock(ch, model_channels * mult, emb_dim, dropout)]
                ch = model_channels * mult
                if rate in attention_rates:
                    layers.append(AttentionBlock(ch))
                self.input_blocks.append(TimestepSequential(*layers))
                skip_channels.append(ch)
            if level != len(channel_mult) - 1:
                self.input_blocks.append(TimestepSequential(Downsample(ch)))
                skip_channels.append(ch)
                rate *= 2

        self.middle_block = TimestepSequential(ResBlock(ch, ch, emb_dim, dropout), AttentionBlock(ch),
                                               ResBlock(ch, ch, emb_dim, dropout))

        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            for i in range(num_res_blocks + 1):
                layers = [ResBlock(ch + skip_channels.pop(), model_channels * mult, emb_dim, dropout)]
                ch = model_channels * mult
                if rate in attention_rates:
                    layers.append(AttentionBlock(ch))
                if level and i == num_res_blocks:
                    layers.append(Upsample(ch))
                    rate //= 2
                self.output_blocks.append(TimestepSequential(*layers))

        self.out = nn.Sequential(GroupNorm32(ch), nn.SiLU(),
                                 nn.Conv2d(ch, in_channels * patch_size**2, 3, padding=1))

    def forward(self, x: Tensor, t: Tensor | int | float, cond: Tensor) -> Tensor:
        b, c, height, width = x.shape
        p = self.patch_size
        if height % self.size_multiple or width % self.size_multiple:
            raise DataError(f"the diffusion decoder needs H and W divisible by {self.size_multiple}, got "
                            f"{height}x{width}")
        nh, nw = height // p, width // p
        # space-to-depth, channel-major: b c (nh p) (nw p) -> b (c p p) nh nw
        patched = x.reshape(b, c, nh, p, nw, p).permute(0, 1, 3, 5, 2, 4).reshape(b, c * p * p, nh, nw)
        cond = F.interpolate(cond.to(patched.dtype), size=(nh, nw), mode="nearest")
        h = torch.cat([patched, cond], dim=1)

        t = torch.as_tensor(t, device=x.device).reshape(-1)  # one timestep for the batch (sampling) or one each
        if t.numel() not in (1, b):
            raise DataError(f"the diffusion decoder takes one timestep or one per sample ({b}), got {t.numel()}")
        emb = self.time_embed(timestep_embedding(t, self.model_channels).to(self.time_embed[0].weight.dtype))

        skips = []
        for block in self.input_blocks:
            h = block(h, emb)
            skips.append(h)
        h = self.middle_block(h, emb)
        for block in self.output_blocks:
            h = block(torch.cat([h, skips.pop()], dim=1), emb)
        out = self.out(h)
        # depth-to-space back: b (c p p) nh nw -> b c (nh p) (nw p)
        return out.reshape(b, c, p, p, nh, nw).permute(0, 1, 4, 2, 5, 3).reshape(b, c, height, width)
