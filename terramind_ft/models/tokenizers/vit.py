"""ViT-B/16 encoder of every TerraMind v1 tokenizer and the ViT-B/16 decoder of the LULC tokenizer.

State-dict names follow the official tokenizer files: ``pos_emb`` (a frozen parameter ``[1, 768, 16, 16]``),
``proj`` (encoder patch Conv2d), ``blocks.{i}.{norm1,norm2,attn.qkv,attn.proj,mlp.fc1,mlp.fc2}``,
``norm_mlp``, ``post_mlp.fc{1,2}`` and, in the decoder, ``out_proj``.

Numerics (spec section 6.2/6.5): pre-norm blocks with ``nn.LayerNorm(eps=1e-6)`` (learned bias, unlike the
TerraMind backbone), exact GELU, fused qkv with bias. The fixed sin-cos position table was built for the 16x16
token grid of the 256 px training size and is bicubically resized (align_corners=False, no antialias) to the
actual grid, e.g. 16 -> 14 at 224 px. After the blocks a residual Tanh MLP (``post_mlp``) runs; in the encoder
it is computed in float32 with autocast disabled, as in the reference. There is no final LayerNorm.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from terramind_ft.errors import DataError
from terramind_ft.models.terramind.layers import Attention, Mlp, sincos_pos_emb_2d
from terramind_ft.modalities import PATCH_SIZE

DIM = 768
DEPTH = 12
NUM_HEADS = 12
MLP_RATIO = 4
TRAIN_GRID = 16  # token grid of the 256 px training size; size of the stored pos_emb tables
LN_EPS = 1e-6


# ---------------------------------------------------------------------------------------------------- blocks


class ViTBlock(nn.Module):
    """Pre-norm block: x + Attn(LN1 x), then + MLP(LN2 x). Norms are declared first, as in the files."""

    def __init__(self, dim: int = DIM, num_heads: int = NUM_HEADS, mlp_ratio: int = MLP_RATIO):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=LN_EPS)
        self.norm2 = nn.LayerNorm(dim, eps=LN_EPS)
        self.attn = Attention(dim, num_heads, qkv_bias=True, proj_bias=True)
        self.mlp = Mlp(dim, dim * mlp_ratio, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TanhMlp(nn.Module):
    """fc1 -> Tanh -> fc2: the point-wise ``post_mlp`` after the transformer blocks."""

    def __init__(self, dim: int = DIM, hidden: int = DIM * MLP_RATIO):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.Tanh()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


def sincos_pos_grid(h: int, w: int, dim: int = DIM) -> Tensor:
    """The fixed 2-D sin-cos table laid out channel-first, ``[1, dim, h, w]`` (the files' layout)."""
    return sincos_pos_emb_2d(h, w, dim).reshape(1, h, w, dim).permute(0, 3, 1, 2).contiguous()


def grid_pos_emb_tokens(pos_emb: Tensor, grid: tuple[int, int]) -> Tensor:
    """``[1, D, 16, 16]`` table -> ``[1, h*w, D]`` row-major tokens, bicubically resized when the grid differs."""
    if tuple(pos_emb.shape[-2:]) != tuple(grid):
        pos_emb = F.interpolate(pos_emb, size=grid, mode="bicubic", align_corners=False)
    return pos_emb.flatten(2).transpose(1, 2)


def _frozen_pos_emb(dim: int) -> nn.Parameter:
    # A Parameter (not a buffer) because the files list it among the parameters; never trained.
    return nn.Parameter(sincos_pos_grid(TRAIN_GRID, TRAIN_GRID, dim), requires_grad=False)


# ---------------------------------------------------------------------------------------------------- models


class TokenizerViTEncoder(nn.Module):
    """Image ``[B, C, H, W]`` (H, W multiples of 16) -> features ``[B, 768, H/16, W/16]``.

    ``forward_intermediates`` returns the 12 per-block token tensors ``[B, N, 768]`` (row-major tokens;
    the last one after ``post_mlp``) and the token grid; this is what the encoder-only backbone exposes.
    """

    def __init__(self, in_channels: int, patch_size: int = PATCH_SIZE, dim: int = DIM, depth: int = DEPTH,
                 num_heads: int = NUM_HEADS, mlp_ratio: int = MLP_RATIO, name: str | None = None):
        super().__init__()
        self.in_channels = in_channels
        self.patch_size = patch_size
        self.dim = dim
        self.name = name
        self.pos_emb = _frozen_pos_emb(dim)
        self.proj = nn.Conv2d(in_channels, dim, kernel_size=patch_size, stride=patch_size)
        self.blocks = nn.ModuleList(ViTBlock(dim, num_heads, mlp_ratio) for _ in range(depth))
        self.norm_mlp = nn.LayerNorm(dim, eps=LN_EPS)
        self.post_mlp = TanhMlp(dim, dim * mlp_ratio)

    def forward_intermediates(self, x: Tensor) -> tuple[list[Tensor], tuple[int, int]]:
        b, c, height, width = x.shape
        if c != self.in_channels:
            raise DataError(f"tokenizer encoder{self._where()} expects {self.in_channels} channels, got {c} "
                            f"(input shape {tuple(x.shape)})")
        if height % self.patch_size or width % self.patch_size:
            raise DataError(f"tokenizer encoder{self._where()} needs H and W divisible by {self.patch_size}, got "
                            f"{height}x{width}; pad or crop the input")
        grid = (height // self.patch_size, width // self.patch_size)
        tokens = self.proj(x).flatten(2).transpose(1, 2)
        tokens = tokens + grid_pos_emb_tokens(self.pos_emb, grid)
        outputs = []
        for block in self.blocks:
            tokens = block(tokens)
            outputs.append(tokens)
        # The reference runs the post-MLP in float32 even under mixed precision (quantisation is sensitive).
        with torch.autocast(device_type=tokens.device.type, enabled=False):
            tokens = tokens.float()
            outputs[-1] = tokens + self.post_mlp(self.norm_mlp(tokens))
        return outputs, grid

    def forward(self, x: Tensor) -> Tensor:
        outputs, (h, w) = self.forward_intermediates(x)
        return outputs[-1].transpose(1, 2).reshape(x.shape[0], self.dim, h, w)

    def _where(self) -> str:
        return f" of modality {self.name}" if self.name else ""


class TokenizerViTDecoder(nn.Module):
    """Features ``[B, 768, h, w]`` -> output ``[B, out_channels, 16h, 16w]`` (LULC: 10-class logits).

    Each token is projected to ``out_channels * 16 * 16`` values laid out channel-major inside the token
    (``(c ph pw)``), unlike the TerraMind backbone's pixel-major patch embedding.
    """

    def __init__(self, out_channels: int, patch_size: int = PATCH_SIZE, dim: int = DIM, depth: int = DEPTH,
                 num_heads: int = NUM_HEADS, mlp_ratio: int = MLP_RATIO):
        super().__init__()
        self.out_channels = out_channels
        self.patch_size = patch_size
        self.dim = dim
        self.pos_emb = _frozen_pos_emb(dim)
        self.blocks = nn.ModuleList(ViTBlock(dim, num_heads, mlp_ratio) for _ in range(depth))
        self.norm_mlp = nn.LayerNorm(dim, eps=LN_EPS)
        self.post_mlp = TanhMlp(dim, dim * mlp_ratio)
        self.out_proj = nn.Linear(dim, out_channels * patch_size * patch_size)

    def forward(self, x: Tensor) -> Tensor:
        b, _, h, w = x.shape
        p, c = self.patch_size, self.out_channels
        tokens = x.flatten(2).transpose(1, 2)
        tokens = tokens + grid_pos_emb_tokens(self.pos_emb, (h, w))
        for block in self.blocks:
            tokens = block(tokens)
        tokens = tokens + self.post_mlp(self.norm_mlp(tokens))  # not forced to fp32 here (reference)
        out = self.out_proj(tokens)  # [B, h*w, c*p*p]
        out = out.reshape(b, h, w, c, p, p).permute(0, 3, 1, 4, 2, 5)  # b c h ph w pw
        return out.reshape(b, c, h * p, w * p)
