"""Finite scalar quantisation (FSQ), the bottleneck of every TerraMind v1 tokenizer.

Each of the ``D`` latent channels (D = number of levels, 5 for TerraMind) is squashed by a sigmoid into
[0, 1], scaled to ``L_c - 1`` and rounded half-to-even (``torch.round``) to an integer digit ``n_c``. The code
is ``n_c / (L_c - 1)`` in [0, 1]; the token id is the mixed-radix number ``sum_c n_c * basis_c`` with
``basis = cumprod([1] + levels[:-1])`` (channel 0 is the least significant digit). TerraMind uses
8-8-8-6-5 (15360 ids) for the DiVAE tokenizers and 7-5-5-5-5 (4375 ids) for LULC; the levels come from the
modality catalogue (:attr:`terramind_ft.modalities.Modality.fsq_levels`).

The quantiser has no learned parameters; its level/basis/codebook buffers are non-persistent, so they never
appear in a state dict (the official tokenizer files do not hold them). Rounding uses a straight-through
estimator so that gradients reach the encoder when a tokenizer is fine-tuned; the forward values are exact
(``x + (round(x) - x)`` is exactly ``round(x)`` in floating point because both terms are within a factor of
two of each other or one of them is zero).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn

from terramind_ft.errors import ConfigError, DataError
from terramind_ft.modalities import get_modality


class FSQOutput(NamedTuple):
    """Result of quantising a latent map ``[B, D, h, w]``."""

    codes: Tensor  # [B, D, h, w] float, every entry n_c / (L_c - 1) in [0, 1]
    indices: Tensor  # [B, h, w] int32 token ids in [0, vocab_size)


class FSQ(nn.Module):
    """Finite scalar quantiser with the given per-channel ``levels``.

    ``forward(latent [B, D, h, w]) -> FSQOutput(codes [B, D, h, w], indices int32 [B, h, w])``;
    ``dequantize(indices [B, h, w]) -> codes [B, D, h, w]``; ``codebook`` is ``[vocab_size, D]``.
    ``name`` (the modality) only serves error messages.
    """

    def __init__(self, levels: Sequence[int], name: str | None = None):
        super().__init__()
        levels = tuple(int(level) for level in levels)
        if not levels or any(level < 2 for level in levels):
            raise ConfigError(f"FSQ levels must be integers >= 2, got {levels!r}", key="fsq_levels")
        self.levels = levels
        self.name = name
        self.dim = len(levels)
        self.vocab_size = math.prod(levels)  # python int: works when the module is built on the meta device
        self._levels: Tensor
        self._basis: Tensor
        self.codebook: Tensor
        self.reset_buffers()

    def reset_buffers(self, device: torch.device | str | None = None) -> None:
        """(Re)compute the level, basis and codebook buffers, e.g. after ``to_empty()`` of a meta-built model."""
        if device is None:
            device = self._levels.device if hasattr(self, "_levels") else None
        basis = [1]
        for level in self.levels[:-1]:
            basis.append(basis[-1] * level)
        self.register_buffer("_levels", torch.tensor(self.levels, dtype=torch.int32, device=device), persistent=False)
        self.register_buffer("_basis", torch.tensor(basis, dtype=torch.int32, device=device), persistent=False)
        codebook = self.indices_to_codes(torch.arange(self.vocab_size, device=device))
        self.register_buffer("codebook", codebook, persistent=False)

    @classmethod
    def for_modality(cls, modality: str) -> FSQ:
        """The quantiser of a modality's tokenizer, with the levels from the catalogue."""
        m = get_modality(modality)
        if m.fsq_levels is None:
            raise ConfigError(f"modality {m.name!r} has no tokenizer, hence no FSQ levels in the catalogue "
                              "(terramind_ft/modalities.py)", key="modality")
        return cls(m.fsq_levels, name=m.name)

    def extra_repr(self) -> str:
        return f"levels={'-'.join(map(str, self.levels))}, vocab_size={self.vocab_size}"

    def forward(self, latent: Tensor) -> FSQOutput:
        """Quantise a channel-first latent map ``[B, D, h, w]``."""
        if latent.ndim != 4 or latent.shape[1] != self.dim:
            raise DataError(f"FSQ{self._where()} expects a latent of shape [B, {self.dim}, h, w], "
                            f"got {tuple(latent.shape)}")
        scale = (self._levels - 1).view(1, -1, 1, 1)
        scaled = torch.sigmoid(latent) * scale
        digits = scaled + (scaled.round() - scaled).detach()  # straight-through rounding, half-to-even
        codes = digits / scale
        indices = (digits * self._basis.view(1, -1, 1, 1)).sum(dim=1).to(torch.int32)
        return FSQOutput(codes, indices)

    def indices_to_codes(self, indices: Tensor) -> Tensor:
        """Codes ``[..., D]`` of token ids ``[...]`` (any integer dtype)."""
        digits = (indices.long().unsqueeze(-1) // self._basis) % self._levels
        return digits / (self._levels - 1)

    def dequantize(self, indices: Tensor) -> Tensor:
        """Code map ``[B, D, h, w]`` of a token-id grid ``[B, h, w]``; ids outside the vocabulary raise."""
        if indices.ndim != 3:
            raise DataError(f"FSQ{self._where()} expects token ids of shape [B, h, w], got {tuple(indices.shape)}")
        if indices.is_floating_point() or indices.is_complex():
            raise DataError(f"FSQ{self._where()} expects integer token ids, got dtype {indices.dtype}")
        self.check_indices(indices)
        return self.indices_to_codes(indices).permute(0, 3, 1, 2)

    def check_indices(self, indices: Tensor) -> None:
        """Raise :class:`DataError` when any id lies outside ``[0, vocab_size)``."""
        if indices.device.type == "meta" or indices.numel() == 0:
            return
        low, high = int(indices.min()), int(indices.max())
        if low < 0 or high >= self.vocab_size:
            raise DataError(f"token ids{self._where()} must lie in [0, {self.vocab_size}) "
                            f"(FSQ levels {'-'.join(map(str, self.levels))}), got values in [{low}, {high}]")

    def _where(self) -> str:
        return f" of modality {self.name}" if self.name else ""
