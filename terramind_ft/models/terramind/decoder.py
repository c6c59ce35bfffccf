"""The TerraMind v1 decoder and the full pretraining encoder-decoder (``TerraMind``).

``TerraMind`` is the model whose ``state_dict()`` the official ``TerraMind_v1_<size>.pt`` files hold: encoder
embeddings for 13 modalities, decoder embeddings for the 6 image-token modalities and coords, the encoder
blocks, ``decoder_proj_context``, the decoder blocks, both norms and ``mask_token``. Built with every
pretraining embedding it matches those files key for key and shape for shape, with the same tensor sharing
(``to_logits`` tied to ``token_emb``; each decoder ``mod_emb`` is the encoder's ``mod_emb`` of the same key).
TiM and generation build it with only the embeddings they need.

Numerics (spec sections 3.5 and 5.2, TerraTorch 1.2.11):

* encoder: every visible token is ``tokens + (pos_emb + mod_emb)``; blocks; ``encoder_norm``;
* context = ``decoder_proj_context(encoded) + (pos_emb + mod_emb)`` of the same tokens (a Linear with bias);
* decoder queries = ``mask_token + pos_emb + mod_emb`` of the target positions, then pre-norm decoder blocks
  (self-attention without mask, cross-attention to the context through ``query_norm``/``context_norm``,
  MLP), ``decoder_norm``, and logits through ``to_logits`` (the tied token embedding).

File layout: constants, decoder embeddings, the encoder-decoder, its builder and registry entries.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from terramind_ft.errors import ModalityError
from terramind_ft.hub import LoadReport, load_checkpoint, read_state_dict, resolve_checkpoint
from terramind_ft.modalities import MODALITIES, PATCH_SIZE, PRETRAINING_IMG_SIZE
from terramind_ft.models.terramind.embeddings import (
    SEQUENCE_POS_TABLE_LENGTH,
    ImageEncoderEmbedding,
    ImageTokenEncoderEmbedding,
    SequenceEncoderEmbedding,
    _GridEmbedding,
)
from terramind_ft.models.terramind.layers import Block, DecoderBlock, LayerNorm, sincos_pos_emb_1d
from terramind_ft.models.terramind.sizes import SIZES, TerraMindSize, get_size
from terramind_ft.models.tokenizers.coords import MAX_LENGTH as COORDS_MAX_LENGTH  # "lat=.. lon=.. [EOS]"
from terramind_ft.registry import FULL_MODEL_REGISTRY

COORDS_KEY = MODALITIES["Coordinates"].token_key  # "coords"

# Embedding keys of the official checkpoints, in their state-dict order.
PRETRAINING_PIXEL_MODALITIES = ("S2L2A", "S2L1C", "RGB", "S1GRD", "S1RTC", "DEM")
PRETRAINING_TOKEN_MODALITIES = ("S2L2A", "S1GRD", "S1RTC", "DEM", "LULC", "NDVI")
PRETRAINING_ENCODER_KEYS: tuple[str, ...] = (
    tuple(MODALITIES[m].pixel_key for m in PRETRAINING_PIXEL_MODALITIES)  # type: ignore[misc]
    + tuple(MODALITIES[m].token_key for m in PRETRAINING_TOKEN_MODALITIES)
    + (COORDS_KEY,)
)
PRETRAINING_DECODER_KEYS: tuple[str, ...] = (
    tuple(MODALITIES[m].token_key for m in PRETRAINING_TOKEN_MODALITIES) + (COORDS_KEY,)  # type: ignore[misc]
)
# Everything but the embeddings must come from the checkpoint when one is loaded.
REQUIRED_PREFIXES = ("encoder.", "encoder_norm.", "decoder.", "decoder_norm.", "decoder_proj_context.",
                     "mask_token")
MASK_TOKEN_INIT_STD = 0.02

_KEY_INFO = {}
for _m in MODALITIES.values():
    if _m.pixel_key:
        _KEY_INFO[_m.pixel_key] = ("pixel", _m)
    if _m.token_key:
        _KEY_INFO[_m.token_key] = ("sequence" if _m.kind == "sequence" else "token", _m)


def embedding_kind(key: str) -> str:
    """``pixel`` | ``token`` | ``sequence`` for a checkpoint embedding key (``untok_sen2l2a@224``, ``coords`` ...)."""
    try:
        return _KEY_INFO[key][0]
    except KeyError:
        raise ModalityError(f"{key!r} is not a TerraMind v1 embedding key; known: {', '.join(_KEY_INFO)}") from None


# --------------------------------------------------------------------------------------------------------------
# Decoder embeddings


class ImageTokenDecoderEmbedding(_GridEmbedding):
    """Decoder side of an image-token modality: queries ``pos_emb + mod_emb`` and tied ``to_logits``.

    Keys: ``mod_emb`` [1, 1, D], ``pos_emb`` [1, h*w, D] (buffer), ``token_emb.weight`` [V, D],
    ``to_logits.weight`` [V, D] (the same tensor as ``token_emb.weight``).
    """

    def __init__(self, vocab_size: int, dim: int, patch_size: int = PATCH_SIZE,
                 image_size: int | tuple[int, int] = PRETRAINING_IMG_SIZE):
        super().__init__(dim, patch_size, image_size)
        self.vocab_size = vocab_size
        self.token_emb = nn.Embedding(vocab_size, dim)
        self.to_logits = nn.Linear(dim, vocab_size, bias=False)
        self.to_logits.weight = self.token_emb.weight

    def query_embedding(self, grid: tuple[int, int], positions: Tensor | None = None) -> Tensor:
        """``pos_emb + mod_emb`` [1, n, D] of the given row-major ``positions`` of a ``grid`` (all if None)."""
        emb = self.position_embedding(tuple(grid))
        return emb if positions is None else emb[:, positions]

    def forward(self, hidden: Tensor) -> Tensor:
        """Logits [B, n, V] of decoder outputs [B, n, D]."""
        return self.to_logits(hidden)


class SequenceDecoderEmbedding(nn.Module):
    """Decoder side of a sequence modality (coords): 1-D ``pos_emb`` + ``mod_emb`` and tied ``to_logits``.

    Keys: ``mod_emb`` [1, 1, D], ``pos_emb`` [1, 512, D] (buffer, the reference's table size),
    ``token_emb.weight`` [V, D] (padding_idx 0), ``to_logits.weight`` (same tensor).
    """

    def __init__(self, vocab_size: int, dim: int, max_length: int = COORDS_MAX_LENGTH, padding_idx: int = 0):
        super().__init__()
        self.vocab_size = vocab_size
        self.max_length = max_length
        self.mod_emb = nn.Parameter(torch.empty(1, 1, dim))
        nn.init.trunc_normal_(self.mod_emb, std=0.02)
        self.register_buffer("pos_emb", sincos_pos_emb_1d(SEQUENCE_POS_TABLE_LENGTH, dim))
        self.token_emb = nn.Embedding(vocab_size, dim, padding_idx=padding_idx)
        self.to_logits = nn.Linear(dim, vocab_size, bias=False)
        self.to_logits.weight = self.token_emb.weight

    def query_embedding(self, length: int) -> Tensor:
        return self.pos_emb[:, :length] + self.mod_emb

    def forward(self, hidden: Tensor) -> Tensor:
        return self.to_logits(hidden)


# --------------------------------------------------------------------------------------------------------------
# The encoder-decoder


def _encoder_embedding(key: str, dim: int, img_size: int | tuple[int, int]) -> nn.Module:
    kind, modality = _KEY_INFO[key] if key in _KEY_INFO else (embedding_kind(key), None)
    if kind == "pixel":
        return ImageEncoderEmbedding(modality.num_bands, dim, patch_size=modality.patch_size, image_size=img_size)
    if kind == "token":
        return ImageTokenEncoderEmbedding(modality.vocab_size, dim, patch_size=modality.patch_size,
                                          image_size=img_size)
    return SequenceEncoderEmbedding(modality.vocab_size, dim)


def _decoder_embedding(key: str, dim: int, img_size: int | tuple[int, int]) -> nn.Module:
    kind, modality = _KEY_INFO[key] if key in _KEY_INFO else (embedding_kind(key), None)
    if kind == "token":
        return ImageTokenDecoderEmbedding(modality.vocab_size, dim, patch_size=modality.patch_size,
                                          image_size=img_size)
    if kind == "sequence":
        return SequenceDecoderEmbedding(modality.vocab_size, dim)
    raise ModalityError(f"{key!r} is a raw-pixel embedding and cannot be decoded; decoder targets are token "
                        f"modalities: {', '.join(PRETRAINING_DECODER_KEYS)}")


class TerraMind(nn.Module):
    """TerraMind v1 encoder-decoder (the pretraining model and the generator of TiM and generation).

    Args:
        size: ``tiny`` | ``small`` | ``base`` | ``large``.
        encoder_keys: encoder embeddings to build (checkpoint keys); default all 13 of the checkpoints.
        decoder_keys: decoder embeddings to build; default all 7 of the checkpoints.
        img_size: size the position tables are built for (keep 224 for the pretrained tables).
    """

    def __init__(self, size: str | TerraMindSize = "base", *, encoder_keys: Sequence[str] = PRETRAINING_ENCODER_KEYS,
                 decoder_keys: Sequence[str] = PRETRAINING_DECODER_KEYS,
                 img_size: int | tuple[int, int] = PRETRAINING_IMG_SIZE):
        super().__init__()
        self.size = size if isinstance(size, TerraMindSize) else get_size(size)
        dim = self.size.dim
        for key in [*encoder_keys, *decoder_keys]:
            embedding_kind(key)  # unknown keys raise with the list of known ones
        self.mask_token = nn.Parameter(torch.empty(1, 1, dim))
        nn.init.trunc_normal_(self.mask_token, std=MASK_TOKEN_INIT_STD)
        self.encoder_embeddings = nn.ModuleDict({k: _encoder_embedding(k, dim, img_size) for k in encoder_keys})
        self.decoder_embeddings = nn.ModuleDict({k: _decoder_embedding(k, dim, img_size) for k in decoder_keys})
        # A modality embedded on both sides has one modality embedding (the reference shares the Parameter).
        for key, dec in self.decoder_embeddings.items():
            if key in self.encoder_embeddings:
                dec.mod_emb = self.encoder_embeddings[key].mod_emb
        block_kwargs = self.size.block_kwargs()
        self.encoder = nn.ModuleList(Block(**block_kwargs) for _ in range(self.size.encoder_depth))
        self.encoder_norm = LayerNorm(dim)
        self.decoder_proj_context = nn.Linear(dim, dim, bias=True)
        self.decoder = nn.ModuleList(DecoderBlock(**block_kwargs) for _ in range(self.size.decoder_depth))
        self.decoder_norm = LayerNorm(dim)
        self.load_report: LoadReport | None = None

    # ---- encoder ----------------------------------------------------------------------------------------------

    def has_encoder_embedding(self, key: str) -> bool:
        return key in self.encoder_embeddings

    def embed(self, key: str, value: Any, visible: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Encoder tokens ``x + emb`` [B, n, D] and ``emb`` [1|B, n, D] of one input (only ``visible`` positions).

        Pixel inputs are ``[B, C, H, W]`` (H, W multiples of 16), token inputs ids ``[B, h, w]``, sequences
        ids ``[B, L]`` (or the text tokenizer's dict).
        """
        if key not in self.encoder_embeddings:
            raise ModalityError(f"this TerraMind has no encoder embedding {key!r}; it has "
                                f"{', '.join(self.encoder_embeddings)}")
        tokens, emb = self.encoder_embeddings[key].forward_embed(value)
        if visible is not None:
            tokens = tokens[:, visible]
            emb = emb[:, visible]
        return tokens + emb, emb

    def encode(self, pieces: Sequence[tuple[str, Any, Tensor | None]]) -> Tensor:
        """Decoder context [B, N, D] of the visible tokens of ``(key, value, visible positions | None)`` pieces."""
        return self.encode_masked(pieces)[0]

    def encode_masked(self, pieces: Sequence[tuple[str, Any, Tensor | None]]) -> tuple[Tensor, Tensor | None]:
        """The decoder context [B, N, D] and its padding mask [B, 1, N] (True = padding; None when no row has any).

        A sequence given as ``{"tensor", "input_mask"}`` (coords of different lengths in one batch) has padding
        in some rows: as in the reference's generation encoder, those tokens are zeroed and neither the encoder
        nor the decoder's cross-attention attends to them, so a row's result does not depend on its batch.
        """
        if not pieces:
            raise ModalityError("the TerraMind encoder needs at least one visible input")
        embedded = [self.embed(key, value, visible) for key, value, visible in pieces]
        batch = max(x.shape[0] for x, _ in embedded)
        x = torch.cat([x.expand(batch, -1, -1) for x, _ in embedded], dim=1)
        emb = torch.cat([e.expand(batch, -1, -1) for _, e in embedded], dim=1)
        padding = [_padding_of(value, visible, x_.shape[1], batch, x.device)
                   for (_, value, visible), (x_, _) in zip(pieces, embedded)]
        mask = None
        if any(p is not None for p in padding):
            mask = torch.cat([p if p is not None else torch.zeros(batch, x_.shape[1], dtype=torch.bool,
                                                                   device=x.device)
                              for p, (x_, _) in zip(padding, embedded)], dim=1)
            x = x.masked_fill(mask[..., None], 0.0)
            emb = emb.masked_fill(mask[..., None], 0.0)
            mask = mask[:, None, :]
        for block in self.encoder:
            x = block(x, mask)
        x = self.encoder_norm(x)
        return self.decoder_proj_context(x) + emb, mask

    # ---- decoder ----------------------------------------------------------------------------------------------

    def decode_logits(self, context: Tensor, key: str, positions: Tensor | None, grid: tuple[int, int],
                      context_mask: Tensor | None = None) -> Tensor:
        """Logits [B, n, V] for ``positions`` (row-major, all if None) of image-token target ``key`` on ``grid``
        (``context_mask``: the padding mask of :meth:`encode_masked`)."""
        if key not in self.decoder_embeddings:
            raise ModalityError(f"this TerraMind has no decoder embedding {key!r}; it decodes "
                                f"{', '.join(self.decoder_embeddings)}")
        target = self.decoder_embeddings[key]
        if not isinstance(target, ImageTokenDecoderEmbedding):
            raise ModalityError(f"{key!r} is a sequence modality: decode it with decode_sequence_logits")
        queries = self.mask_token + target.query_embedding(grid, positions)
        y = queries.expand(context.shape[0], -1, -1)
        for block in self.decoder:
            y = block(y, context, None, context_mask)
        return target(self.decoder_norm(y))

    def decode_sequence_logits(self, context: Tensor, key: str, ids: Tensor, positions: Tensor | None = None,
                               self_mask: Tensor | None = None, context_mask: Tensor | None = None) -> Tensor:
        """Next-token logits [B, L, V] of sequence target ``key`` (coords) after the decoder inputs ``ids`` [B, L].

        As the reference's autoregressive step: queries are ``token_emb(ids) + pos_emb[positions] + mod_emb``
        (no mask token; positions default 0..L-1), self-attention is causal unless ``self_mask`` [L, L] (True =
        masked out) says otherwise, every query sees the whole context [1|B, N, D].
        """
        target = self.decoder_embeddings[key] if key in self.decoder_embeddings else None
        if not isinstance(target, SequenceDecoderEmbedding):
            raise ModalityError(f"this TerraMind has no sequence decoder embedding {key!r}; it decodes "
                                f"{', '.join(self.decoder_embeddings)}")
        batch, length = ids.shape
        if positions is None:
            positions = torch.arange(length, device=ids.device)
        if self_mask is None:
            self_mask = torch.ones(length, length, dtype=torch.bool, device=ids.device).triu(1)
        y = target.token_emb(ids) + target.pos_emb[:, positions] + target.mod_emb
        mask = self_mask.expand(batch, -1, -1)
        context = context.expand(batch, -1, -1) if context.shape[0] == 1 else context
        if context_mask is not None and context_mask.shape[0] == 1:
            context_mask = context_mask.expand(batch, -1, -1)
        for block in self.decoder:
            y = block(y, context, mask, context_mask)
        return target(self.decoder_norm(y))

    def forward(self, inputs: dict[str, Any], target: str, grid: tuple[int, int] | None = None) -> Tensor:
        """Logits [B, h*w, V] of every position of ``target`` given fully visible ``inputs`` {key: value}."""
        if grid is None:
            grid = _grid_of(inputs)
        context, mask = self.encode_masked([(key, value, None) for key, value in inputs.items()])
        return self.decode_logits(context, target, None, grid, mask)

    def extra_repr(self) -> str:
        return (f"size={self.size.name}, encoder_keys={list(self.encoder_embeddings)}, "
                f"decoder_keys={list(self.decoder_embeddings)}")


def _padding_of(value: Any, visible: Tensor | None, length: int, batch: int, device: torch.device) -> Tensor | None:
    """[B, length] padding of a piece: a sequence dict's ``input_mask`` (at its visible positions); None if none."""
    if not isinstance(value, dict) or value.get("input_mask") is None:
        return None
    mask = value["input_mask"].bool().to(device)
    if visible is not None:
        mask = mask[:, visible]
    if mask.shape[1] != length or not bool(mask.any()):
        return None
    return mask.expand(batch, -1)


def _grid_of(inputs: dict[str, Any]) -> tuple[int, int]:
    for value in inputs.values():
        if isinstance(value, Tensor) and value.ndim == 4:
            return value.shape[-2] // PATCH_SIZE, value.shape[-1] // PATCH_SIZE
        if isinstance(value, Tensor) and value.ndim == 3 and not value.is_floating_point():
            return int(value.shape[1]), int(value.shape[2])
    raise ModalityError("cannot infer the token grid from the inputs; pass grid=(h, w)")


# --------------------------------------------------------------------------------------------------------------
# Builder and registry entries: terramind_v1_{tiny,small,base,large}_encdec


def load_terramind_checkpoint(model: TerraMind, *, pretrained: bool = False, ckpt_path: str | None = None,
                              what: str | None = None) -> LoadReport | None:
    """Fill ``model`` from the official checkpoint of its size (``pretrained``) or ``ckpt_path``.

    Every block, norm, ``decoder_proj_context`` and ``mask_token`` must load; embeddings the file lacks stay
    at their initialisation and are reported in one warning.
    """
    size = model.size
    what = what or f"{size.registry_name}_encdec"
    path = resolve_checkpoint(pretrained=pretrained, ckpt_path=ckpt_path, repo_id=size.hf_repo_id,
                              filename=size.hf_filename, what=what)
    if path is None:
        return None
    report = load_checkpoint(model, read_state_dict(path), strict_prefixes=REQUIRED_PREFIXES, what=what, warn=False)
    report.source = str(path)
    report.emit()
    model.load_report = report
    return report


def build_terramind(size: str, *, encoder_modalities: Sequence[str] | None = None,
                    decoder_modalities: Sequence[str] | None = None, pretrained: bool = False,
                    ckpt_path: str | None = None, img_size: int | tuple[int, int] = PRETRAINING_IMG_SIZE) -> TerraMind:
    """The encoder-decoder of ``size``; modalities are checkpoint keys (default: all of the checkpoint)."""
    model = TerraMind(size, encoder_keys=tuple(encoder_modalities or PRETRAINING_ENCODER_KEYS),
                      decoder_keys=tuple(decoder_modalities or PRETRAINING_DECODER_KEYS), img_size=img_size)
    load_terramind_checkpoint(model, pretrained=pretrained, ckpt_path=ckpt_path)
    return model


def _register_encdec(size: TerraMindSize) -> None:
    def build(encoder_modalities: Sequence[str] | None = None, decoder_modalities: Sequence[str] | None = None,
              pretrained: bool = False, ckpt_path: str | None = None,
              img_size: int | tuple[int, int] = PRETRAINING_IMG_SIZE) -> TerraMind:
        return build_terramind(size.name, encoder_modalities=encoder_modalities,
                               decoder_modalities=decoder_modalities, pretrained=pretrained, ckpt_path=ckpt_path,
                               img_size=img_size)

    name = f"{size.registry_name}_encdec"
    build.__name__ = build.__qualname__ = name
    build.__doc__ = (f"TerraMind v1 {size.name} pretraining encoder-decoder ({size.encoder_depth} encoder / "
                     f"{size.decoder_depth} decoder blocks); state dict = {size.hf_filename}. Modalities are "
                     "checkpoint embedding keys (default: all).")
    build.__signature__ = inspect.signature(build)  # type: ignore[attr-defined]
    FULL_MODEL_REGISTRY.register(build, name=name)


for _size in SIZES.values():
    _register_encdec(_size)
