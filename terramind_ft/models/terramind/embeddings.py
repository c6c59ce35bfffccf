"""Encoder embeddings of TerraMind v1: raw pixels, image token ids and sequences (coords) -> tokens.

Parameter and buffer names are those of the official checkpoints (``encoder_embeddings.<key>.proj.weight``,
``.token_emb.weight``, ``.mod_emb``, ``.pos_emb``). Every embedding has

* ``forward_embed(x) -> (tokens [B, N, D], emb [1|B, N, D])`` where ``emb = pos_emb + mod_emb``; the
  encoder-decoder needs the two parts apart (the decoder context adds ``emb`` again), and
* ``forward(x) -> tokens + emb``, what the backbone feeds to its blocks.

Numerics follow TerraTorch 1.2.11: patches are flattened (row-in-patch, col-in-patch, channel) with the channel
fastest and multiplied by a bias-free Linear ``proj`` of shape [D, C * p * p]; the fixed 2-D sin-cos ``pos_emb``
is a persistent buffer for the pretraining grid (14 x 14 at 224 px) and is resized bicubically (align_corners
False, no antialias) to other grids; the 1-D table of sequence embeddings always has 512 rows (a reference quirk
kept because the checkpoints store it that way).
"""

from __future__ import annotations

import logging
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from terramind_ft.errors import ConfigError, ModalityError
from terramind_ft.models.terramind.layers import sincos_pos_emb_1d, sincos_pos_emb_2d

log = logging.getLogger(__name__)

# Rows of the 1-D sin-cos table of sequence embeddings. The reference builds 512 positions and slices the
# wrong axis, so ``encoder_embeddings.coords.pos_emb`` is [1, 512, D] in the checkpoints whatever max_length is.
SEQUENCE_POS_TABLE_LENGTH = 512
MOD_EMB_INIT_STD = 0.02


def _pair(size: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    size = tuple(int(s) for s in size)
    if len(size) != 2:
        raise ConfigError(f"an image size is an int or (height, width), got {size}", key="img_size")
    return size  # type: ignore[return-value]


def _pretraining_grid(image_size: tuple[int, int], patch_size: int) -> tuple[int, int]:
    if image_size[0] % patch_size or image_size[1] % patch_size:
        raise ConfigError(f"img_size {image_size} must be a multiple of the patch size {patch_size}",
                          key="img_size")
    return image_size[0] // patch_size, image_size[1] // patch_size


def resize_grid_table(table: Tensor, from_grid: tuple[int, int], to_grid: tuple[int, int]) -> Tensor:
    """Bicubic resize of a row-major [1, h*w, D] position table from ``from_grid`` to ``to_grid``.

    Same operation as the reference's ``interpolate_pos_encoding`` (``F.interpolate`` bicubic, align_corners
    False, no antialias, on the [1, D, h, w] grid) but also correct for non-square stored grids.
    """
    if tuple(from_grid) == tuple(to_grid):
        return table
    d = table.shape[-1]
    grid = table.reshape(1, from_grid[0], from_grid[1], d).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=tuple(to_grid), mode="bicubic", align_corners=False)
    return grid.permute(0, 2, 3, 1).reshape(1, to_grid[0] * to_grid[1], d)


_INTERPOLATIONS_SAID: set[tuple[tuple[int, int], tuple[int, int]]] = set()


class _GridEmbedding(nn.Module):
    """Shared part of the image embeddings: ``mod_emb`` and the 2-D ``pos_emb`` of the pretraining grid."""

    def __init__(self, dim: int, patch_size: int, image_size: int | tuple[int, int]):
        super().__init__()
        self.dim = dim
        self.patch_size = patch_size
        self.image_size = _pair(image_size)
        self.grid = _pretraining_grid(self.image_size, patch_size)
        self.mod_emb = nn.Parameter(torch.empty(1, 1, dim))
        nn.init.trunc_normal_(self.mod_emb, std=MOD_EMB_INIT_STD)
        self.register_buffer("pos_emb", sincos_pos_emb_2d(self.grid[0], self.grid[1], dim))

    def position_embedding(self, grid: tuple[int, int]) -> Tensor:
        """``pos_emb + mod_emb`` for a token grid (h, w): [1, h*w, D]."""
        grid = (int(grid[0]), int(grid[1]))
        if grid != tuple(self.grid) and (tuple(self.grid), grid) not in _INTERPOLATIONS_SAID:
            _INTERPOLATIONS_SAID.add((tuple(self.grid), grid))  # once per process and grid pair, not per batch
            p = self.patch_size
            log.info("notice: position embeddings interpolated (bicubic, as the reference) from the pretraining grid "
                     "%dx%d (%dx%d px) to %dx%d (%dx%d px)", self.grid[0], self.grid[1], self.grid[0] * p,
                     self.grid[1] * p, grid[0], grid[1], grid[0] * p, grid[1] * p)
        return resize_grid_table(self.pos_emb, self.grid, grid) + self.mod_emb


class ImageEncoderEmbedding(_GridEmbedding):
    """Raw-pixel patch embedding: [B, C, H, W] -> [B, (H/p)(W/p), D] (H, W multiples of ``patch_size``).

    Keys: ``proj.weight`` [D, C*p*p] (bias-free), ``mod_emb`` [1, 1, D], ``pos_emb`` [1, h*w, D] (buffer).
    """

    def __init__(self, num_channels: int, dim: int, patch_size: int = 16, image_size: int | tuple[int, int] = 224):
        super().__init__(dim, patch_size, image_size)
        if num_channels < 1:
            raise ConfigError(f"an image embedding needs at least one channel, got {num_channels}")
        self.num_channels = num_channels
        self.proj = nn.Linear(num_channels * patch_size * patch_size, dim, bias=False)

    def token_grid(self, height: int, width: int) -> tuple[int, int]:
        p = self.patch_size
        if height % p or width % p:
            raise ModalityError(f"image of {height}x{width} px is not a multiple of the patch size {p}; pad it "
                                "first (the TerraMind encoder does this for you)")
        return height // p, width // p

    def patchify(self, x: Tensor) -> Tensor:
        """[B, C, H, W] -> [B, N, p*p*C] patches, flattened (row-in-patch, col-in-patch, channel)."""
        b, c, h, w = x.shape
        p = self.patch_size
        x = x.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 3, 5, 1)
        return x.reshape(b, (h // p) * (w // p), p * p * c)

    def forward_embed(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if x.ndim != 4 or x.shape[1] != self.num_channels:
            raise ModalityError(f"expected an image [B, {self.num_channels}, H, W], got shape {list(x.shape)}")
        grid = self.token_grid(x.shape[2], x.shape[3])
        p = self.patch_size
        # The Linear over (ph, pw, c)-flattened patches is a stride-p convolution with the weight viewed as
        # [D, p, p, C] -> [D, C, p, p]; the convolution avoids materialising the permuted patch tensor.
        weight = self.proj.weight.view(self.dim, p, p, self.num_channels).permute(0, 3, 1, 2)
        tokens = F.conv2d(x, weight.to(x.dtype), stride=p).flatten(2).transpose(1, 2)
        return tokens, self.position_embedding(grid)

    def forward(self, x: Tensor) -> Tensor:
        tokens, emb = self.forward_embed(x)
        return tokens + emb


class ImageTokenEncoderEmbedding(_GridEmbedding):
    """Token-id embedding of image tokenizer outputs: ids [B, h, w] (or [B, h*w], square) -> [B, h*w, D].

    Keys: ``token_emb.weight`` [V, D], ``mod_emb`` [1, 1, D], ``pos_emb`` [1, h*w, D] (buffer).
    """

    def __init__(self, vocab_size: int, dim: int, patch_size: int = 16, image_size: int | tuple[int, int] = 224):
        super().__init__(dim, patch_size, image_size)
        self.vocab_size = vocab_size
        self.token_emb = nn.Embedding(vocab_size, dim)

    @staticmethod
    def ids_grid(ids: Tensor) -> tuple[int, int]:
        """Token grid of an id tensor: [B, h, w] -> (h, w); [B, N] -> (sqrt N, sqrt N), N must be square."""
        if ids.ndim == 3:
            return int(ids.shape[1]), int(ids.shape[2])
        if ids.ndim == 2:
            side = math.isqrt(ids.shape[1])
            if side * side != ids.shape[1]:
                raise ModalityError(f"{ids.shape[1]} flat token ids do not form a square grid; pass ids as "
                                    "[B, h, w] for non-square grids")
            return side, side
        raise ModalityError(f"token ids must be [B, h, w] or [B, h*w], got shape {list(ids.shape)}")

    def forward_embed(self, ids: Tensor) -> tuple[Tensor, Tensor]:
        grid = self.ids_grid(ids)
        tokens = self.token_emb(ids.reshape(ids.shape[0], -1).long())
        return tokens, self.position_embedding(grid)

    def forward(self, ids: Tensor) -> Tensor:
        tokens, emb = self.forward_embed(ids)
        return tokens + emb


class SequenceEncoderEmbedding(nn.Module):
    """Token-id embedding of text sequences (coords): ids [B, L] -> [B, L, D].

    Keys: ``token_emb.weight`` [V, D] (padding_idx 0), ``mod_emb`` [1, 1, D], ``pos_emb`` [1, 512, D] (buffer).
    An optional boolean ``input_mask`` [B, L] (True = padding) gives position ids that count only unmasked
    tokens and zeroes the position embedding of masked ones, as in the reference.
    """

    def __init__(self, vocab_size: int, dim: int, max_length: int = SEQUENCE_POS_TABLE_LENGTH, padding_idx: int = 0):
        super().__init__()
        if not 0 < max_length <= SEQUENCE_POS_TABLE_LENGTH:
            raise ConfigError(f"max_length must be in 1..{SEQUENCE_POS_TABLE_LENGTH}, got {max_length}")
        self.dim = dim
        self.vocab_size = vocab_size
        self.max_length = max_length
        self.token_emb = nn.Embedding(vocab_size, dim, padding_idx=padding_idx)
        self.mod_emb = nn.Parameter(torch.empty(1, 1, dim))
        nn.init.trunc_normal_(self.mod_emb, std=MOD_EMB_INIT_STD)
        self.register_buffer("pos_emb", sincos_pos_emb_1d(SEQUENCE_POS_TABLE_LENGTH, dim))

    def forward_embed(self, ids: Tensor | dict[str, Tensor], input_mask: Tensor | None = None
                      ) -> tuple[Tensor, Tensor]:
        if isinstance(ids, dict):  # text tokenizers return {"tensor": ids, "input_mask": mask}
            input_mask = ids.get("input_mask", input_mask)
            ids = ids["tensor"]
        if ids.ndim != 2:
            raise ModalityError(f"sequence ids must be [B, L], got shape {list(ids.shape)}")
        length = ids.shape[1]
        if length > self.max_length:
            raise ModalityError(f"sequence of {length} tokens is longer than max_length {self.max_length}")
        tokens = self.token_emb(ids.long())
        if input_mask is None:
            emb = self.pos_emb[:, :length]
        else:
            input_mask = input_mask.bool()
            pos_ids = (torch.cumsum((~input_mask).long(), dim=1) - 1).clamp(min=0).masked_fill(input_mask, 0)
            emb = self.pos_emb[0, pos_ids].masked_fill(input_mask[..., None], 0.0)
        return tokens, emb + self.mod_emb

    def forward(self, ids: Tensor | dict[str, Tensor], input_mask: Tensor | None = None) -> Tensor:
        tokens, emb = self.forward_embed(ids, input_mask)
        return tokens + emb
