"""The TerraMind v1 encoder backbone (``terramind_v1_{tiny,small,base,large}`` in ``BACKBONE_REGISTRY``).

Reads one or more modalities, embeds each (raw pixels, token ids or coords), concatenates the token sequences
in input order, runs the transformer blocks and returns the per-layer features, merged over modalities.

Inputs: a dict ``{modality: tensor}`` (insertion order = token order), keyword arguments, or a bare tensor
(the first configured modality). Raw pixels are float ``[B, C, H, W]`` of any H, W: sizes that are not a
multiple of 16 are padded at the bottom/right (``padding="reflect"`` by default, zero -- the pretraining mean
after standardisation -- with ``padding="zero"`` or when the image is smaller than the padding). Token
modalities (LULC, NDVI, explicit ``tok_*@224`` keys) take integer token ids ``[B, h, w]``; given as a raw map
(float ``[B, C, H, W]``/``[B, H, W]``, or an integer LULC class map of the same pixel size as the other inputs
or ``[B, 1, H, W]``) they are tokenised by the frozen tokenizer ``terramind_v1_tokenizer_<x>`` from
``FULL_MODEL_REGISTRY``, built on first use. The backbone applies no standardisation.

Output: a :class:`BackboneOutput` -- a list with one ``[B, N, D]`` tensor per block (the last one after
``encoder_norm``), ``.grid = (h, w)`` and ``.image_size = (H, W)`` of the unpadded input.

Deliberate differences from the reference (TerraTorch 1.2.11), all in its documented quirks: the ``concat``
merge places modalities in *configured* order (the reference uses input order and appends the
``missing_mod_token`` after the present ones, which moves channel blocks when a modality is absent); the
``missing_mod_token`` starts at zeros, not uninitialised memory; tokenizers are frozen and run under
``no_grad``; unknown input names raise instead of being dropped; the loader reports every weight it could
not fill.
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.utils.checkpoint
import torch.nn.functional as F
from torch import Tensor, nn

from terramind_ft.errors import CheckpointError, ConfigError, ModalityError
from terramind_ft.hub import LoadReport, load_checkpoint, read_state_dict, resolve_checkpoint
from terramind_ft.modalities import MODALITIES, PATCH_SIZE, PRETRAINING_IMG_SIZE, Modality, resolve_input
from terramind_ft.models.terramind.embeddings import (
    ImageEncoderEmbedding,
    ImageTokenEncoderEmbedding,
    SequenceEncoderEmbedding,
)
from terramind_ft.models.terramind.layers import Block, LayerNorm
from terramind_ft.models.terramind.sizes import SIZES, TerraMindSize, get_size, register_size_variants
from terramind_ft.registry import BACKBONE_REGISTRY, FULL_MODEL_REGISTRY

log = logging.getLogger(__name__)

MERGE_METHODS = ("mean", "max", "concat", "dict", None)
PADDING_MODES = ("reflect", "zero")
COORDS_TOKENIZER = "terramind_v1_tokenizer_coords"
# Blocks and final norm must come from the checkpoint whenever one is loaded.
REQUIRED_PREFIXES = ("encoder.", "encoder_norm.")

Kind = Literal["pixel", "token", "sequence"]


# --------------------------------------------------------------------------------------------------------------
# Output container and building blocks


class BackboneOutput(list):
    """Per-layer features (a ``list``) plus the token grid and the unpadded input size.

    ``grid = (h, w)`` is the token grid of the (padded) image modalities, ``image_size = (H, W)`` the input
    size before padding, ``modalities`` the input names in token order. Slicing keeps the attributes.
    """

    def __init__(self, layers: Sequence[Any] = (), *, grid: tuple[int, int] = (0, 0),
                 image_size: tuple[int, int] = (0, 0), modalities: Sequence[str] = ()):
        super().__init__(layers)
        self.grid = tuple(grid)
        self.image_size = tuple(image_size)
        self.modalities = list(modalities)

    def _like(self, layers: Sequence[Any]) -> BackboneOutput:
        return BackboneOutput(layers, grid=self.grid, image_size=self.image_size, modalities=self.modalities)

    def __getitem__(self, index):  # type: ignore[override]
        item = super().__getitem__(index)
        return self._like(item) if isinstance(index, slice) else item

    def select(self, indices: Sequence[int]) -> BackboneOutput:
        """The layers at ``indices`` (negative allowed), keeping grid and image size."""
        return self._like([list.__getitem__(self, i) for i in indices])


def _drop_path(x: Tensor, rate: float) -> Tensor:
    """Stochastic depth: zero the residual branch for a random subset of samples, rescale the rest."""
    keep = torch.rand((x.shape[0],) + (1,) * (x.ndim - 1), device=x.device, dtype=x.dtype) >= rate
    return x * keep / (1.0 - rate)


class EncoderBlock(Block):
    """:class:`~terramind_ft.models.terramind.layers.Block` with optional stochastic depth while training."""

    def __init__(self, *, drop_path: float = 0.0, **block_kwargs: Any):
        super().__init__(**block_kwargs)
        self.drop_path = drop_path

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        if not (self.training and self.drop_path > 0):
            return super().forward(x, mask)
        x = x + _drop_path(self.attn(self.norm1(x), mask), self.drop_path)
        return x + _drop_path(self.mlp(self.norm2(x)), self.drop_path)


@dataclass
class InputSpec:
    """One configured input: the user's name, its embedding key and how it is consumed."""

    name: str  # key of the input dict (as the user wrote it in ``modalities``)
    key: str  # encoder_embeddings key (checkpoint key, or the name of a new modality)
    kind: Kind
    modality: Modality | None  # catalogue entry; None for a new modality
    channels: int | None = None  # pixel modalities

    @property
    def is_new(self) -> bool:
        return self.modality is None


def _spec_from_name(name: str) -> InputSpec:
    canonical, key = resolve_input(name, key="modalities")
    modality = MODALITIES[canonical]
    if key == modality.pixel_key:
        return InputSpec(name, key, "pixel", modality, channels=modality.num_bands)
    return InputSpec(name, key, "sequence" if modality.kind == "sequence" else "token", modality)


def parse_modalities(modalities: Any, in_chans: int | None = None) -> list[tuple[InputSpec, nn.Module | None]]:
    """Turn the ``modalities`` argument into input specs (plus user-given embedding modules)."""
    if modalities is None or (isinstance(modalities, Sequence) and not isinstance(modalities, str)
                              and len(modalities) == 0):
        if in_chans is None:
            raise ConfigError("give at least one modality, e.g. [S2L2A, S1GRD], or {NAME: n_channels} for a new one "
                              f"(known: {', '.join(MODALITIES)})", key="modalities")
        modalities = [{"image": in_chans}]
    elif in_chans is not None:
        raise ConfigError("in_chans only applies when modalities is empty (it creates one new modality 'image'); "
                          "use {NAME: n_channels} entries in modalities instead", key="in_chans")
    if isinstance(modalities, (str, Mapping)):
        modalities = [modalities]
    parsed: list[tuple[InputSpec, nn.Module | None]] = []
    for entry in modalities:
        if isinstance(entry, str):
            parsed.append((_spec_from_name(entry), None))
        elif isinstance(entry, Mapping):
            for name, value in entry.items():
                name = str(name)
                if "." in name or not name:
                    raise ConfigError(f"new modality name {name!r} must be non-empty and contain no '.'",
                                      key="modalities")
                if isinstance(value, nn.Module):
                    parsed.append((InputSpec(name, name, "pixel", None), value))
                elif isinstance(value, int) and not isinstance(value, bool) and value > 0:
                    parsed.append((InputSpec(name, name, "pixel", None, channels=value), None))
                else:
                    raise ConfigError(f"new modality {name!r}: expected a channel count (int > 0) or an nn.Module, "
                                      f"got {value!r}", key="modalities")
        else:
            raise ConfigError(f"each modality is a name (S2L2A) or {{NAME: n_channels}}, got {entry!r}",
                              key="modalities")
    seen_names: dict[str, str] = {}
    seen_keys: dict[str, str] = {}
    for spec, _ in parsed:
        if spec.name in seen_names:
            raise ModalityError(f"modality {spec.name!r} is listed twice", key="modalities")
        if spec.key in seen_keys:
            raise ModalityError(f"modalities {seen_keys[spec.key]!r} and {spec.name!r} both use the embedding "
                                f"{spec.key!r}; each embedding can be used once", key="modalities")
        seen_names[spec.name] = spec.key
        seen_keys[spec.key] = spec.name
    return parsed


# --------------------------------------------------------------------------------------------------------------
# The model


class TerraMindEncoder(nn.Module):
    """TerraMind v1 encoder backbone (the reference's ``TerraMindViT``).

    Args:
        modalities: input modalities, in the order their tokens are concatenated by default: catalogue names or
            aliases (``S2L2A``, ``S1GRD``, ``RGB``, ``DEM``, ``LULC``, ``NDVI``, ``coords``, exact keys like
            ``tok_sen2l2a@224``) and ``{NAME: n_channels}`` entries for new, randomly initialised modalities.
        size: ``tiny``/``small``/``base``/``large`` (fixed by the registry entry).
        pretrained: load ``ibm-esa-geospatial/TerraMind-1.0-<size>`` through the Hugging Face cache.
        ckpt_path: load this local ``.pt``/``.safetensors`` instead (wins over ``pretrained``).
        bands: ``{modality: [band names]}`` to use a subset/reordering of a pretrained modality's bands; the
            pretrained patch-embedding columns of each named band are copied, unknown bands start random.
        merge_method: ``mean`` | ``max`` (over image modalities, per patch) | ``concat`` (feature axis, configured
            order, [B, N, M*D]) | ``dict`` ({name: [B, N_m, D]}) | ``None`` (all tokens, [B, N_total, D]).
        img_size: size (int or (H, W)) the position tables are built for; other input sizes interpolate the
            table bicubically. Keep 224 to use the pretrained tables (case e of the reference fixtures).
        patch_size: patch size of *new* modalities (pretrained ones use 16).
        modality_drop_rate: while training, drop each present modality but one (drawn at random) with this
            probability (per batch, the reference's rule).
        drop_path_rate: stochastic depth, rising linearly to this rate over the blocks.
        padding: ``reflect`` or ``zero``: how inputs are padded to a multiple of the patch size.
        in_chans: with empty ``modalities``, create one new modality ``image`` with this many channels.
        tokenizer_kwargs: ``{modality: {kwargs}}`` for building the tokenizer of a token modality given as a
            raw map (default ``pretrained`` = this model's ``pretrained or ckpt_path``).
        activation_checkpointing: while training, keep only each block's input and recompute the block in the
            backward pass (``torch.utils.checkpoint``): far less memory for the encoder's activations, for about
            one more encoder forward per step. Same gradients.
    """

    def __init__(
        self,
        modalities: Sequence[str | Mapping[str, int]] | None = None,
        *,
        size: str = "base",
        pretrained: bool = False,
        ckpt_path: str | None = None,
        bands: Mapping[str, Sequence[str]] | None = None,
        merge_method: str | None = "mean",
        img_size: int | tuple[int, int] = PRETRAINING_IMG_SIZE,
        patch_size: int = PATCH_SIZE,
        modality_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        padding: str = "reflect",
        in_chans: int | None = None,
        tokenizer_kwargs: Mapping[str, Mapping[str, Any]] | None = None,
        activation_checkpointing: bool = False,
    ):
        super().__init__()
        self.size: TerraMindSize = get_size(size)
        self.activation_checkpointing = bool(activation_checkpointing)
        if isinstance(merge_method, str) and merge_method.lower() == "none":
            merge_method = None
        if merge_method not in MERGE_METHODS:
            raise ConfigError(f"unknown merge method {merge_method!r}; valid: mean, max, concat, dict, None",
                              key="merge_method")
        if not 0.0 <= float(modality_drop_rate) < 1.0:
            raise ConfigError(f"must be in [0, 1), got {modality_drop_rate}", key="modality_drop_rate")
        if not 0.0 <= float(drop_path_rate) < 1.0:
            raise ConfigError(f"must be in [0, 1), got {drop_path_rate}", key="drop_path_rate")
        if padding not in PADDING_MODES:
            raise ConfigError(f"unknown padding {padding!r}; valid: {', '.join(PADDING_MODES)}", key="padding")
        self.merge_method = merge_method
        self.modality_drop_rate = float(modality_drop_rate)
        self.padding = padding
        self.pretrained = bool(pretrained)
        self.ckpt_path = ckpt_path
        self.img_size = img_size
        self.patch_size = PATCH_SIZE
        self.embed_dim = self.size.dim

        parsed = parse_modalities(modalities, in_chans)
        self.specs: dict[str, InputSpec] = {spec.name: spec for spec, _ in parsed}
        self.modalities: list[str] = list(self.specs)
        self.mod_name_mapping: dict[str, str] = {spec.name: spec.key for spec in self.specs.values()}
        dim = self.size.dim
        embeddings: dict[str, nn.Module] = {}
        for spec, module in parsed:
            if module is not None:
                embeddings[spec.key] = module
            elif spec.kind == "pixel":
                patch = spec.modality.patch_size if spec.modality else patch_size
                embeddings[spec.key] = ImageEncoderEmbedding(spec.channels, dim, patch_size=patch, image_size=img_size)
            elif spec.kind == "token":
                embeddings[spec.key] = ImageTokenEncoderEmbedding(spec.modality.vocab_size, dim,
                                                                  patch_size=spec.modality.patch_size,
                                                                  image_size=img_size)
            else:
                embeddings[spec.key] = SequenceEncoderEmbedding(spec.modality.vocab_size, dim)
        self.encoder_embeddings = nn.ModuleDict(embeddings)
        depth = self.size.encoder_depth  # stochastic depth rises linearly from 0 (first) to the rate (last)
        rates = [float(drop_path_rate) * i / max(depth - 1, 1) for i in range(depth)]
        self.encoder = nn.ModuleList(
            EncoderBlock(drop_path=rate, **self.size.block_kwargs()) for rate in rates
        )
        self.encoder_norm = LayerNorm(dim)
        self.image_specs = [s for s in self.specs.values() if s.kind != "sequence"]
        if merge_method == "concat":
            # Stands in for an absent image modality in the concatenation; no checkpoint holds it.
            self.missing_mod_token = nn.Parameter(torch.zeros(dim))

        self._warned_unknown: set[str] = set()
        self.tokenizer_kwargs = self._check_tokenizer_kwargs(tokenizer_kwargs)
        # Tokenizers are frozen helpers, built on first use: kept out of the state dict and the parameters.
        self._tokenizers: dict[str, nn.Module] = {}

        band_indices = self._check_bands(bands)
        self.load_report: LoadReport | None = None
        path = resolve_checkpoint(pretrained=self.pretrained, ckpt_path=ckpt_path, repo_id=self.size.hf_repo_id,
                                  filename=self.size.hf_filename, what=self.size.registry_name)
        state = None
        if path is not None:
            state = read_state_dict(path)
            self._check_checkpoint_size(state, str(path))
            expected = [r"missing_mod_token", r"encoder_embeddings\..*\.band_order"] + [
                rf"encoder_embeddings\.{re.escape(s.key)}\..*" for s in self.specs.values() if s.is_new]
            self.load_report = load_checkpoint(self, state, strict_prefixes=REQUIRED_PREFIXES,
                                               expected_missing=expected, what=self.size.registry_name, warn=False)
            self.load_report.source = str(path)
        for name, indices in band_indices.items():
            self._adapt_bands(self.specs[name], self._bands[name], indices, state)
        if self.load_report is not None:
            self.load_report.emit()

    # ---- configuration helpers --------------------------------------------------------------------------------

    @property
    def depth(self) -> int:
        return self.size.encoder_depth

    @property
    def out_channels(self) -> list[int]:
        """Channels of each returned layer (``concat`` multiplies by the number of image modalities)."""
        width = self.embed_dim * len(self.image_specs) if self.merge_method == "concat" else self.embed_dim
        return [width] * self.depth

    def spec_for(self, name: str) -> InputSpec:
        """The configured input for ``name``: the exact configured name, or any alias of the same embedding."""
        if name in self.specs:
            return self.specs[name]
        try:
            key = resolve_input(name)[1]
        except ConfigError:  # not a catalogue name either; reported below with the configured names
            key = None
        for spec in self.specs.values():
            if spec.key == key:
                return spec
        raise ModalityError(f"input {name!r} is not a modality of this backbone; configured modalities: "
                            f"{', '.join(self.modalities)} (set them with `modalities`)", key="modalities")

    def _check_tokenizer_kwargs(self, tokenizer_kwargs: Mapping[str, Mapping[str, Any]] | None
                                ) -> dict[str, dict[str, Any]]:
        result: dict[str, dict[str, Any]] = {}
        for name, kwargs in (tokenizer_kwargs or {}).items():
            spec = self.spec_for(name)
            if spec.kind == "pixel":
                raise ConfigError(f"{name!r} is a pixel modality and has no tokenizer; token modalities here: "
                                  f"{[s.name for s in self.specs.values() if s.kind != 'pixel']}",
                                  key="tokenizer_kwargs")
            result[spec.name] = dict(kwargs)
        return result

    def input_bands(self, name: str) -> tuple[str, ...] | None:
        """The bands the channels of pixel input ``name`` must hold, in order: its ``bands``, or the pretrained
        order. None for a new modality (its bands have no names here) and for token or sequence inputs."""
        spec = self.spec_for(name)
        if spec.kind != "pixel" or spec.is_new:
            return None
        return tuple(self._bands.get(spec.name, spec.modality.bands))

    def _check_bands(self, bands: Mapping[str, Sequence[str]] | None) -> dict[str, list[int | None]]:
        """Validate ``bands``; returns {configured name: pretrained index per requested band (None = new)}."""
        result: dict[str, list[int | None]] = {}
        for name, band_list in (bands or {}).items():
            spec = self.spec_for(name)
            if spec.kind != "pixel" or spec.is_new or not isinstance(
                    self.encoder_embeddings[spec.key], ImageEncoderEmbedding):
                raise ModalityError(f"bands apply to pretrained pixel modalities (S2L1C, S2L2A, RGB, S1GRD, S1RTC, "
                                    f"DEM); {name!r} is a {'new' if spec.is_new else spec.kind} modality"
                                    + (" -- give its channel count as {NAME: n_channels} instead" if spec.is_new
                                       else ""), key=f"bands.{name}")
            if isinstance(band_list, str) or not band_list:
                raise ModalityError(f"expected a non-empty list of band names, got {band_list!r}; pretrained bands "
                                    f"of {spec.modality.name}: {', '.join(spec.modality.bands)}", key=f"bands.{name}")
            result[spec.name] = [spec.modality.band_index(str(b)) for b in band_list]
        self._bands = {self.spec_for(n).name: [str(b) for b in v] for n, v in (bands or {}).items()}
        return result

    def _check_checkpoint_size(self, state: Mapping[str, Tensor], source: str) -> None:
        qkv = state.get("encoder.0.attn.qkv.weight")
        if qkv is None:
            return  # load_checkpoint names every missing block key
        depth = 1 + max((int(m.group(1)) for k in state if (m := re.match(r"encoder\.(\d+)\.", k))), default=0)
        dim = qkv.shape[1]
        if (dim, depth) != (self.size.dim, self.size.encoder_depth):
            match = [s.registry_name for s in SIZES.values() if (s.dim, s.encoder_depth) == (dim, depth)]
            raise CheckpointError(
                f"{source} holds a TerraMind encoder of width {dim} and depth {depth}, but "
                f"{self.size.registry_name} has width {self.size.dim} and depth {self.size.encoder_depth}. "
                + (f"Use backbone {match[0]} for this checkpoint." if match else "It is not a TerraMind v1 encoder."),
            )

    def _adapt_bands(self, spec: InputSpec, band_names: Sequence[str], indices: list[int | None],
                     state: Mapping[str, Tensor] | None) -> None:
        """Replace the modality's ``proj`` by one over ``band_names`` (in that order), its columns taken from the
        checkpoint by band.

        What the checkpoint is decides where each band's columns are: a projection saved by terramind-ft with
        custom bands carries its layout (the ``band_order`` buffer: pretrained band index per column, -1 for a
        new band) and is remapped by it (loaded as saved when the layout is the requested one); a projection
        without it is in the pretrained band order when it has all the modality's bands (the official
        checkpoints), so a full-length permutation (``[VH, VV]``, BGR) takes the columns of each named band;
        one with exactly the requested number of columns and no layout is an older narrowed projection, loaded
        as saved.
        """
        embedding: ImageEncoderEmbedding = self.encoder_embeddings[spec.key]  # type: ignore[assignment]
        old = embedding.proj.weight.detach()
        pixels = embedding.patch_size ** 2
        full = len(spec.modality.bands)
        new_proj = nn.Linear(pixels * len(indices), embedding.dim, bias=False, device=old.device, dtype=old.dtype)
        prefix = f"encoder_embeddings.{spec.key}"
        key = f"{prefix}.proj.weight"
        report = self.load_report
        ready = state.get(key) if state is not None else None
        saved_order = state.get(f"{prefix}.band_order") if state is not None else None
        wanted = [-1 if i is None else int(i) for i in indices]
        source, source_indices, how = old, wanted, "narrowed"  # no checkpoint: the random full init, by band
        if ready is not None:
            saved_columns = ready.shape[1] // pixels
            if saved_order is not None:
                saved = [int(i) for i in saved_order.tolist()]
                if len(saved) != saved_columns:
                    raise CheckpointError(f"{key}: {saved_columns} band columns but a band_order of {len(saved)}")
                if saved == wanted:
                    source, source_indices, how = ready, list(range(len(saved))), "as saved"
                else:
                    source, how = ready, "remapped from the saved band order"
                    source_indices = [saved.index(i) if i >= 0 and i in saved else -1 for i in wanted]
            elif saved_columns == full:
                source, how = ready, "in pretrained band order"
            elif saved_columns == len(indices):
                source, source_indices, how = ready, list(range(len(indices))), "as saved"
            else:
                raise CheckpointError(f"{key} has {saved_columns} band columns; {spec.modality.name} has {full} "
                                      f"pretrained bands and {len(indices)} are requested ({list(band_names)}): the "
                                      "checkpoint belongs to another band selection")
        with torch.no_grad():
            src_view = source.reshape(embedding.dim, pixels, -1)
            new_view = new_proj.weight.view(embedding.dim, pixels, len(indices))
            for j, index in enumerate(source_indices):
                if index >= 0:
                    new_view[:, :, j] = src_view[:, :, index]
        if ready is not None and report is not None:
            report.mismatched = [m for m in report.mismatched if m[0] != key]
            if key not in report.loaded:
                report.loaded.append(key)
        unknown = [b for b, i in zip(band_names, source_indices) if i < 0]
        pretrained_bands = ", ".join(spec.modality.bands)
        if unknown and report is not None:
            report.notes.append(f"{spec.name}: bands {unknown} are not pretrained bands of {spec.modality.name} "
                                f"({pretrained_bands}); their patch-embedding columns start random")
        elif unknown:
            log.info("%s: bands %s are new (pretrained bands: %s)", spec.name, unknown, pretrained_bands)
        if report is not None:
            report.info.append(f"{spec.name}: patch embedding for bands {list(band_names)} {how} "
                               f"(pretrained band indices {indices})")
        embedding.proj = new_proj
        embedding.num_channels = len(indices)
        # The layout travels with the weights, so that a fine-tuned projection is never read in another order.
        embedding.register_buffer("band_order", torch.tensor(wanted, dtype=torch.long, device=old.device))
        spec.channels = len(indices)

    # ---- forward ----------------------------------------------------------------------------------------------

    def _collect_inputs(self, x: Tensor | Mapping[str, Any] | None, kwargs: Mapping[str, Any]
                        ) -> list[tuple[InputSpec, Any]]:
        if x is None:
            given: dict[str, Any] = {}
        elif isinstance(x, Tensor):
            given = {self.modalities[0]: x}
        elif isinstance(x, Mapping):
            given = dict(x)
        else:
            raise ModalityError(f"expected a dict of modality tensors, a tensor or keyword arguments, got "
                                f"{type(x).__name__}")
        for name, value in kwargs.items():
            if name in given:
                raise ModalityError(f"modality {name!r} given twice (in the dict and as a keyword argument)")
            given[name] = value
        inputs: list[tuple[InputSpec, Any]] = []
        seen: set[str] = set()
        ignored: list[str] = []
        for name, value in given.items():
            try:
                spec = self.spec_for(name)
            except ModalityError:
                # As the reference: an input the backbone has no embedding for is left out, here with a warning
                # (once per key) so that a misspelt key does not pass unnoticed.
                ignored.append(str(name))
                if name not in self._warned_unknown:
                    self._warned_unknown.add(name)
                    warnings.warn(f"input {name!r} is not a modality of this backbone and is ignored; configured "
                                  f"modalities: {', '.join(self.modalities)}", UserWarning, stacklevel=3)
                continue
            if spec.name in seen:
                raise ModalityError(f"modality {spec.name!r} given twice (as {name!r})")
            seen.add(spec.name)
            if value is not None:  # None = modality absent from this batch
                inputs.append((spec, value))
        if not inputs:
            extra = f" (ignored {', '.join(repr(n) for n in ignored)}: not a modality of this backbone)" if ignored else ""
            raise ModalityError(f"no input given{extra}; configured modalities: {', '.join(self.modalities)}")
        return inputs

    def droppable(self, spec: InputSpec) -> bool:
        """Whether ``modality_drop_rate`` may drop this input (TiM keeps its generated modalities)."""
        return True

    def _drop_modalities(self, inputs: list[tuple[InputSpec, Any]]) -> list[tuple[InputSpec, Any]]:
        """The reference's rule, so that a TerraTorch config regularises the same way: per batch, one input drawn
        at random is always kept; each other input is dropped with probability ``modality_drop_rate``."""
        candidates = [i for i, (spec, _) in enumerate(inputs) if self.droppable(spec)]
        if len(candidates) < 2:
            return inputs
        spared = candidates[int(torch.randint(len(candidates), (1,)))]
        draws = torch.rand(len(inputs)).tolist()
        dropped = {i for i in candidates if i != spared and draws[i] < self.modality_drop_rate}
        return [item for i, item in enumerate(inputs) if i not in dropped]

    def _pad(self, x: Tensor, patch: int) -> Tensor:
        height, width = x.shape[-2:]
        pad_h, pad_w = (-height) % patch, (-width) % patch
        if not (pad_h or pad_w):
            return x
        if self.padding == "reflect" and pad_h < height and pad_w < width:
            squeeze = x.ndim == 3
            padded = F.pad(x.unsqueeze(1) if squeeze else x, (0, pad_w, 0, pad_h), mode="reflect")
            return padded.squeeze(1) if squeeze else padded
        return F.pad(x, (0, pad_w, 0, pad_h))

    def _get_tokenizer(self, spec: InputSpec) -> nn.Module:
        if spec.name in self._tokenizers:
            return self._tokenizers[spec.name]
        name = (f"terramind_v1_tokenizer_{spec.modality.tokenizer.lower()}" if spec.modality.tokenizer
                else COORDS_TOKENIZER)
        if name not in FULL_MODEL_REGISTRY:
            raise ModalityError(
                f"{spec.name} was given as a raw map, which needs the tokenizer {name!r}, but FULL_MODEL_REGISTRY "
                f"has no such entry (tokenizers available: "
                f"{', '.join(n for n in FULL_MODEL_REGISTRY.names() if 'tokenizer' in n) or 'none'}). "
                f"Pass integer token ids [B, h, w] for {spec.name} instead, or install the tokenizer module.")
        kwargs = {"pretrained": self.pretrained or self.ckpt_path is not None,
                  **self.tokenizer_kwargs.get(spec.name, {})}
        if not kwargs.get("pretrained") and not kwargs.get("ckpt_path") and not kwargs.get("tokenizer_file"):
            warnings.warn(f"{spec.name}: tokenizer {name} is built with random weights (the backbone is not "
                          "pretrained); its token ids carry no meaning. Set pretrained or tokenizer_kwargs.",
                          stacklevel=3)
        tokenizer = FULL_MODEL_REGISTRY.build(name, **kwargs)
        tokenizer.eval().requires_grad_(False)
        self._tokenizers[spec.name] = tokenizer
        return tokenizer

    def _tokenize(self, spec: InputSpec, raw: Tensor) -> Tensor:
        tokenizer = self._get_tokenizer(spec)
        param = next(tokenizer.parameters(), None)
        if param is not None and param.device != raw.device:
            tokenizer.to(raw.device)
        with torch.no_grad():
            encode = getattr(tokenizer, "encode_tokens", tokenizer.encode)
            ids = encode(raw.to(param.dtype) if param is not None and raw.is_floating_point() else raw)
        if isinstance(ids, tuple):  # (quant, loss, tokens) style
            ids = ids[-1]
        if isinstance(ids, Mapping):  # text tokenizers: {"tensor": ids, "input_mask": mask}
            return ids  # type: ignore[return-value]
        return ids

    def _check_ids(self, spec: InputSpec, ids: Tensor, vocab: int) -> None:
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= vocab):
            raise ModalityError(f"{spec.name}: token ids must lie in [0, {vocab}), got range "
                                f"[{int(ids.min())}, {int(ids.max())}]", key="modalities")

    def _embed(self, spec: InputSpec, value: Any, pixel_size: tuple[int, int] | None
               ) -> tuple[Tensor, tuple[int, int] | None, tuple[int, int] | None]:
        """Tokens [B, N, D] of one input, its token grid (None for sequences) and its unpadded pixel size."""
        embedding = self.encoder_embeddings[spec.key]
        if spec.kind == "pixel":
            if not isinstance(value, Tensor) or value.ndim != 4 or not value.is_floating_point():
                raise ModalityError(f"{spec.name}: expected float pixels [B, C, H, W], got "
                                    f"{_describe(value)}", key="modalities")
            if isinstance(embedding, ImageEncoderEmbedding) and value.shape[1] != embedding.num_channels:
                bands = self._bands.get(spec.name) or (spec.modality.bands if spec.modality else None)
                raise ModalityError(f"{spec.name}: expected {embedding.num_channels} channels"
                                    + (f" ({', '.join(bands)})" if bands else "")
                                    + f", got {value.shape[1]} (shape {list(value.shape)}); select a band subset "
                                    f"with `bands`", key="modalities")
            size = (int(value.shape[-2]), int(value.shape[-1]))
            patch = getattr(embedding, "patch_size", self.patch_size)
            padded = self._pad(value, patch)
            tokens = embedding(padded)
            return tokens, (padded.shape[-2] // patch, padded.shape[-1] // patch), size
        if spec.kind == "sequence":
            if isinstance(value, Tensor) and value.is_floating_point():
                value = self._tokenize(spec, value)
            if isinstance(value, Tensor):
                self._check_ids(spec, value, spec.modality.vocab_size)
            return embedding(value), None, None
        # token modality: ids, or a raw map to tokenise
        value, raw_size = self.token_ids(spec, value, pixel_size)
        return embedding(value), ImageTokenEncoderEmbedding.ids_grid(value), raw_size

    def token_ids(self, spec: InputSpec, value: Any, pixel_size: tuple[int, int] | None
                  ) -> tuple[Tensor, tuple[int, int] | None]:
        """Token ids of a token-modality input (tokenising a raw map) and the raw map's pixel size (or None).

        Shared with TiM, which tokenises once and feeds the ids to both its generator and its encoder.
        """
        embedding = self.encoder_embeddings[spec.key]
        if not isinstance(value, Tensor):
            raise ModalityError(f"{spec.name}: expected a tensor, got {_describe(value)}", key="modalities")
        raw_size = None
        is_class_map = (not value.is_floating_point() and value.ndim == 3 and pixel_size is not None
                        and tuple(value.shape[-2:]) == pixel_size)
        if value.is_floating_point() or value.ndim == 4 or is_class_map:
            raw = value
            if spec.modality.is_categorical and not raw.is_floating_point():  # class map -> one-hot channels
                raw = raw[:, 0] if raw.ndim == 4 else raw
                classes = spec.modality.num_classes
                if raw.numel() and (int(raw.min()) < 0 or int(raw.max()) >= classes):
                    raise ModalityError(f"{spec.name}: class ids must lie in [0, {classes}), got values in "
                                        f"[{int(raw.min())}, {int(raw.max())}]", key="modalities")
                raw = F.one_hot(raw.long(), classes).permute(0, 3, 1, 2).float()
            if raw.ndim == 3:
                raw = raw.unsqueeze(1)
            raw_size = (int(raw.shape[-2]), int(raw.shape[-1]))
            value = self._tokenize(spec, self._pad(raw, spec.modality.patch_size))
        self._check_ids(spec, value, embedding.vocab_size)
        return value, raw_size

    def forward(self, x: Tensor | Mapping[str, Any] | None = None, **kwargs: Any) -> BackboneOutput:
        inputs = self._collect_inputs(x, kwargs)
        if self.training and self.modality_drop_rate > 0 and len(inputs) > 1:
            inputs = self._drop_modalities(inputs)
        pixel_sizes = {spec.name: (int(v.shape[-2]), int(v.shape[-1])) for spec, v in inputs
                       if spec.kind == "pixel" and isinstance(v, Tensor) and v.ndim == 4}
        if len(set(pixel_sizes.values())) > 1:
            raise ModalityError(f"all pixel inputs must have the same height and width, got {pixel_sizes}")
        pixel_size = next(iter(pixel_sizes.values()), None)

        pieces, grids, counts = [], {}, []
        image_size = pixel_size
        for spec, value in inputs:
            tokens, grid, raw_size = self._embed(spec, value, pixel_size)
            pieces.append(tokens)
            counts.append(tokens.shape[1])
            if grid is not None:
                grids[spec.name] = grid
            if image_size is None and raw_size is not None:
                image_size = raw_size
        if self.merge_method in ("mean", "max", "concat") and len(set(grids.values())) > 1:
            raise ModalityError(f"merge_method {self.merge_method!r} needs the same token grid for every image "
                                f"modality, got {grids}; resize the inputs or use merge_method dict/None")
        grid = next(iter(grids.values()), (0, 0))
        if image_size is None:
            image_size = (grid[0] * self.patch_size, grid[1] * self.patch_size)

        hidden = torch.cat(pieces, dim=1) if len(pieces) > 1 else pieces[0]
        layers = []
        recompute = self.activation_checkpointing and self.training and torch.is_grad_enabled()
        for block in self.encoder:
            if recompute and hidden.requires_grad:  # a frozen encoder keeps nothing for backward anyway
                hidden = torch.utils.checkpoint.checkpoint(block, hidden, use_reentrant=False)
            else:
                hidden = block(hidden)
            layers.append(hidden)
        layers[-1] = self.encoder_norm(hidden)
        names = [spec.name for spec, _ in inputs]
        merged = [self._merge(layer, inputs, counts) for layer in layers]
        return BackboneOutput(merged, grid=grid, image_size=image_size, modalities=names)

    def _merge(self, layer: Tensor, inputs: list[tuple[InputSpec, Any]], counts: list[int]) -> Any:
        if self.merge_method is None:
            return layer
        parts = dict(zip((spec.name for spec, _ in inputs), layer.split(counts, dim=1)))
        if self.merge_method == "dict":
            return parts
        image_parts = {name: parts[name] for name in parts if self.specs[name].kind != "sequence"}
        if not image_parts:
            raise ModalityError(f"merge_method {self.merge_method!r} needs at least one image modality; got only "
                                f"{list(parts)} (use merge_method dict or None)")
        if self.merge_method == "concat":
            ref = next(iter(image_parts.values()))
            filler = self.missing_mod_token.to(ref.dtype).expand(ref.shape[0], ref.shape[1], -1)
            return torch.cat([image_parts.get(spec.name, filler) for spec in self.image_specs], dim=-1)
        stacked = torch.stack(list(image_parts.values()), dim=1)
        return stacked.mean(dim=1) if self.merge_method == "mean" else stacked.amax(dim=1)

    def extra_repr(self) -> str:
        return (f"size={self.size.name}, modalities={self.modalities}, merge_method={self.merge_method}, "
                f"img_size={self.img_size}")


def _describe(value: Any) -> str:
    if isinstance(value, Tensor):
        return f"{str(value.dtype).removeprefix('torch.')} tensor of shape {list(value.shape)}"
    return type(value).__name__


# --------------------------------------------------------------------------------------------------------------
# Registry entries: terramind_v1_{tiny,small,base,large}

register_size_variants(
    BACKBONE_REGISTRY, TerraMindEncoder, "",
    lambda size: (f"TerraMind v1 {size.name} encoder backbone (dim {size.dim}, {size.encoder_depth} blocks); "
                  f"weights {size.hf_repo_id}/{size.hf_filename}. See TerraMindEncoder for the arguments."))
