"""Any-to-any generation: ``terramind_v1_{tiny,small,base,large}_generate`` in ``FULL_MODEL_REGISTRY``.

``model = FULL_MODEL_REGISTRY.build("terramind_v1_base_generate", modalities=["S2L2A"],
output_modalities=["S1GRD", "DEM", "LULC"], pretrained=True, standardize=True)`` then
``model({"S2L2A": x}, timesteps=10, seed=0)`` returns ``{"S1GRD": [B, 2, H, W], "DEM": [B, 1, H, W],
"LULC": [B, 10, H, W]}``.

Pipeline (spec section 5): inputs (raw pixels, token-modality maps or token ids) -> optional standardisation
with the v1 pretraining statistics of :mod:`terramind_ft.modalities` -> padding to a size the tokenizers can
decode -> token-modality inputs tokenised -> ROAR token sampling by the encoder-decoder ``sampler.model``
(temperature, top-p on the un-tempered logits, top-k, ``decoding_steps`` steps; greedy at temperature 0) ->
tokens to pixels by each output's tokenizer (``decode_tokens``: DiVAE diffusion with ``timesteps`` DDIM steps,
the LULC VQVAE's ViT decoder) -> crop -> outputs in physical units when ``standardize`` (DiVAE values x std +
mean; LULC as class probabilities, see :func:`lulc_class_map`).

Differences from the reference (TerraTorch 1.2.11):

* ``decoding_steps > 1`` works (the reference crashes; see :mod:`.sampling`);
* ``seed=`` (forward or build argument) drives one ``torch.Generator`` for the tokens and one CPU generator for
  the diffusion noise; the global RNG is never reseeded, and the same seed reproduces the outputs exactly;
* chained generation (1.2.11: earlier outputs condition later ones) is the default, ``chained=False`` gives
  the v1.1.1 behaviour (every output from the inputs alone);
* ``offset`` shifts a copy of the mean; the catalogue statistics are never mutated;
* any input size: inputs are padded (reflect) to a multiple of the tokenizers' size and outputs cropped back;
* LULC is returned as probabilities (softmax of the tokenizer logits) rather than logits;
* ``output_modalities=`` at forward time selects a subset of the configured outputs.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from terramind_ft.errors import ConfigError, ModalityError
from terramind_ft.modalities import (
    MODALITIES,
    PATCH_SIZE,
    PRETRAINING_IMG_SIZE,
    TOKEN_MODALITIES,
    Modality,
    resolve_input,
    resolve_output,
)
from terramind_ft.models.terramind.decoder import TerraMind, load_terramind_checkpoint
from terramind_ft.models.terramind.geolocation import GridTokens, LocationDistribution, location_distribution
from terramind_ft.models.terramind.sampling import SamplingSettings, decode_chained, make_generator
from terramind_ft.models.terramind.sizes import (
    TerraMindSize,
    get_size,
    register_size_variants,
)
from terramind_ft.models.tokenizers.coords import SEQUENCE_START_ID
from terramind_ft.ops import class_ids
from terramind_ft.registry import FULL_MODEL_REGISTRY

DEFAULT_TIMESTEPS = 50  # DDIM steps per DiVAE output (the reference's default; its notebooks use 10)
_SEED_MIX = 0x9E3779B97F4A7C15  # spreads (seed, output index) into independent diffusion seeds


def lulc_class_map(probabilities: Tensor) -> Tensor:
    """Class indices ``[B, H, W]`` (int64) of LULC probabilities or logits ``[B, 10, H, W]``."""
    return class_ids(probabilities, dim=1)


def _tokenizer_registry_name(modality: Modality) -> str:
    return f"terramind_v1_tokenizer_{modality.tokenizer.lower()}"  # type: ignore[union-attr]


class _Input:
    """A configured input: user name, canonical modality, encoder key, and how it is consumed."""

    def __init__(self, name: str):
        self.name = name
        canonical, key = resolve_input(name, key="modalities")
        self.modality = MODALITIES[canonical]
        self.key = key
        if key == self.modality.pixel_key:
            self.kind = "pixel"
        elif self.modality.kind == "sequence":
            self.kind = "sequence"
        else:
            self.kind = "token"


class TerraMindGeneration(nn.Module):
    """TerraMind any-to-any generation model (see the module docstring).

    Args:
        modalities: inputs (S2L2A, S2L1C, RGB, S1GRD, S1RTC, DEM as pixels; LULC, NDVI as maps or token ids;
            exact keys like ``tok_sen2l2a@224`` for token ids of other modalities).
        output_modalities: token modalities to generate, in generation order: S2L2A, S1GRD, S1RTC, DEM, LULC,
            NDVI.
        size: ``tiny`` | ``small`` | ``base`` | ``large`` (fixed by the registry entry).
        pretrained / ckpt_path: TerraMind weights (HF ``TerraMind-1.0-<size>`` or a local file).
        standardize: standardise inputs and de-standardise outputs with the v1 pretraining statistics.
        timesteps: default DDIM steps of the diffusion decoders (``forward(timesteps=...)`` overrides).
        temps, top_p, top_k, decoding_steps: token sampling (reference defaults 1.0, 0.8, 0, 1).
        chained: later outputs are conditioned on earlier generated ones (1.2.11 behaviour).
        seed: default seed of ``forward`` (None: a seed read from the global RNG per call).
        offset: ``{modality: value}`` added to the mean used for standardisation (a copy).
        img_size: size the position tables are built for (keep 224 for the pretrained tables).
        tokenizer_kwargs: ``{modality: {pretrained, ckpt_path}}`` for building a tokenizer (default:
            ``pretrained`` = this model's ``pretrained or ckpt_path``).
        tokenizers: ``{modality: module}`` ready tokenizers (with ``encode`` / ``decode_tokens``) to use instead
            of building them.
    """

    def __init__(
        self,
        modalities: Sequence[str],
        output_modalities: Sequence[str],
        *,
        size: str = "base",
        pretrained: bool = False,
        ckpt_path: str | os.PathLike | None = None,
        standardize: bool = False,
        timesteps: int = DEFAULT_TIMESTEPS,
        temps: float = 1.0,
        top_p: float = 0.8,
        top_k: int | float = 0,
        decoding_steps: int = 1,
        chained: bool = True,
        seed: int | None = None,
        offset: Mapping[str, float | Sequence[float]] | None = None,
        img_size: int | tuple[int, int] = PRETRAINING_IMG_SIZE,
        tokenizer_kwargs: Mapping[str, Mapping[str, Any]] | None = None,
        tokenizers: Mapping[str, nn.Module] | None = None,
    ):
        super().__init__()
        self.size: TerraMindSize = get_size(size)
        if isinstance(modalities, str):
            modalities = [modalities]
        if isinstance(output_modalities, str):
            output_modalities = [output_modalities]
        if not modalities:
            raise ConfigError("give at least one input modality, e.g. [S2L2A]", key="modalities")
        if not output_modalities:
            raise ConfigError(f"give at least one output modality of {', '.join(TOKEN_MODALITIES)}, coords",
                              key="output_modalities")
        self.inputs = {name: _Input(str(name)) for name in modalities}
        keys = [i.key for i in self.inputs.values()]
        if len(set(keys)) != len(keys):
            raise ModalityError(f"two inputs use the same embedding: {dict(zip(self.inputs, keys))}", key="modalities")
        self.outputs: dict[str, tuple[Modality, str]] = {}
        for name in output_modalities:
            canonical, key = resolve_output(str(name), key="output_modalities")
            modality = MODALITIES[canonical]
            if any(key == k for _, k in self.outputs.values()):
                raise ModalityError(f"output {name!r} is listed twice", key="output_modalities")
            self.outputs[str(name)] = (modality, key)
        self.sampling = SamplingSettings(temperature=float(temps), top_p=float(top_p), top_k=top_k,
                                         decoding_steps=int(decoding_steps))
        if int(timesteps) < 1:
            raise ConfigError(f"must be >= 1, got {timesteps}", key="timesteps")
        self.timesteps = int(timesteps)
        self.standardize = bool(standardize)
        self.chained = bool(chained)
        self.seed = seed
        self.pretrained = bool(pretrained)
        self.ckpt_path = ckpt_path
        self._offset = self._check_offset(offset)

        output_keys = [key for _, key in self.outputs.values()]
        visible = output_keys if self.sampling.decoding_steps > 1 else (output_keys[:-1] if self.chained else [])
        encoder_keys = list(dict.fromkeys([*keys, *visible]))
        self.sampler = nn.Module()
        self.sampler.model = TerraMind(self.size, encoder_keys=encoder_keys, decoder_keys=output_keys,
                                       img_size=img_size)
        load_terramind_checkpoint(self.sampler.model, pretrained=pretrained,
                                  ckpt_path=None if ckpt_path is None else str(ckpt_path),
                                  what=f"{self.size.registry_name}_generate")
        self.sampler.requires_grad_(False)
        self.tokenizer = nn.ModuleDict(self._build_tokenizers(tokenizer_kwargs or {}, tokenizers or {}))
        self.eval()

    # ---- construction helpers ---------------------------------------------------------------------------------

    def _check_offset(self, offset: Mapping[str, Any] | None) -> dict[str, Tensor]:
        result = {}
        for name, value in (offset or {}).items():
            modality = MODALITIES[resolve_input(str(name), key="offset")[0]]
            values = torch.as_tensor(value, dtype=torch.float64).flatten()
            if values.numel() not in (1, modality.num_bands):
                raise ConfigError(f"offset of {name} needs 1 or {modality.num_bands} values, got {values.numel()}",
                                  key=f"offset.{name}")
            result[modality.name] = values
        return result

    def _build_tokenizers(self, tokenizer_kwargs: Mapping[str, Mapping[str, Any]],
                          given: Mapping[str, nn.Module]) -> dict[str, nn.Module]:
        needed: dict[str, Modality] = {}
        for spec in self.inputs.values():
            if spec.kind == "token" and spec.modality.tokenizer:
                needed[spec.modality.token_key] = spec.modality  # type: ignore[index]
        for modality, key in self.outputs.values():
            if modality.kind != "sequence":  # coords use the text tokenizer (_coords_text_tokenizer)
                needed[key] = modality
        given_by_key = {}
        for name, module in given.items():
            given_by_key[MODALITIES[resolve_output(str(name), key="tokenizers")[0]].token_key] = module
        kwargs_by_modality = {MODALITIES[resolve_output(str(n), key="tokenizer_kwargs")[0]].name: dict(v)
                              for n, v in tokenizer_kwargs.items()}
        # coords are text-tokenised on demand (raw lon/lat inputs), with these arguments (tokenizer_file, ...)
        self._coords_tokenizer_kwargs = kwargs_by_modality.get("Coordinates", {})
        self._coords_tokenizer: nn.Module | None = None
        built: dict[str, nn.Module] = {}
        for key, modality in needed.items():
            if key in given_by_key:
                tokenizer = given_by_key[key]
            else:
                kwargs = {"pretrained": self.pretrained or self.ckpt_path is not None,
                          **kwargs_by_modality.get(modality.name, {})}
                if not kwargs.get("pretrained") and not kwargs.get("ckpt_path"):
                    warnings.warn(f"{modality.name}: tokenizer {_tokenizer_registry_name(modality)} is built with "
                                  "random weights; generated pixels carry no meaning. Set pretrained=True or "
                                  f"tokenizer_kwargs={{'{modality.name}': {{'ckpt_path': ...}}}}.", stacklevel=3)
                tokenizer = FULL_MODEL_REGISTRY.build(_tokenizer_registry_name(modality), **kwargs)
            tokenizer.requires_grad_(False)
            built[key] = tokenizer.eval()
        return built

    def _coords_text_tokenizer(self) -> nn.Module:
        """terramind_v1_tokenizer_coords (the reference's WordPiece vocabulary), built on first use."""
        if self._coords_tokenizer is None:
            kwargs = {"pretrained": self.pretrained or self.ckpt_path is not None, **self._coords_tokenizer_kwargs}
            self._coords_tokenizer = FULL_MODEL_REGISTRY.build("terramind_v1_tokenizer_coords", **kwargs)
        return self._coords_tokenizer

    def _tokenize_coords(self, coords: Tensor) -> dict[str, Tensor]:
        """(lon, lat) [B, 2] -> the reference's coords token ids."""
        return self._coords_text_tokenizer().encode(coords)

    def train(self, mode: bool = True) -> TerraMindGeneration:
        return super().train(False)  # nothing here trains; tokenizers and generator stay in eval mode

    # ---- inputs -----------------------------------------------------------------------------------------------

    def _stats(self, modality: Modality, like: Tensor) -> tuple[Tensor, Tensor]:
        mean = torch.tensor(modality.mean, dtype=torch.float64)
        if modality.name in self._offset:
            mean = mean + self._offset[modality.name]
        std = torch.tensor(modality.std, dtype=torch.float64)
        shape = (1, -1, 1, 1)
        return mean.to(like.device, like.dtype).view(shape), std.to(like.device, like.dtype).view(shape)

    def _size_multiple(self, keys: Sequence[str]) -> int:
        multiple = PATCH_SIZE
        for key in keys:
            if key not in self.tokenizer:  # coords: no pixels to decode
                continue
            decoder = getattr(self.tokenizer[key], "decoder", None)
            multiple = math.lcm(multiple, int(getattr(decoder, "size_multiple", PATCH_SIZE)))
        return multiple

    @staticmethod
    def _pad(x: Tensor, multiple: int) -> Tensor:
        height, width = x.shape[-2:]
        pad_h, pad_w = (-height) % multiple, (-width) % multiple
        if not (pad_h or pad_w):
            return x
        squeeze = x.ndim == 3
        x4 = x.unsqueeze(1) if squeeze else x
        if pad_h < height and pad_w < width and x4.is_floating_point():
            x4 = F.pad(x4, (0, pad_w, 0, pad_h), mode="reflect")
        else:  # integer maps (LULC classes) and tiny images: replicate the edge
            x4 = F.pad(x4.float(), (0, pad_w, 0, pad_h), mode="replicate").to(x.dtype)
        return x4.squeeze(1) if squeeze else x4

    def _collect(self, x: Any, kwargs: Mapping[str, Any]) -> list[tuple[_Input, Any, str]]:
        if isinstance(x, Tensor):
            given = {next(iter(self.inputs)): x}
        elif isinstance(x, Mapping):
            given = dict(x)
        elif x is None:
            given = {}
        else:
            raise ModalityError(f"expected a dict of modality tensors or a tensor, got {type(x).__name__}")
        given.update(kwargs)
        by_key = {spec.key: spec for spec in self.inputs.values()}
        result = []
        for name, value in given.items():
            spec = self.inputs.get(name)
            if spec is None:
                try:
                    spec = by_key.get(resolve_input(name)[1])
                except ModalityError:
                    spec = None
            if spec is None:
                raise ModalityError(f"input {name!r} is not an input of this model; inputs: {list(self.inputs)} "
                                    "(set them with `modalities`)", key="modalities")
            if value is not None:
                result.append((spec, value, name))
        if not result:
            raise ModalityError(f"no input given; inputs of this model: {list(self.inputs)}", key="modalities")
        return result

    def _prepare_inputs(self, given: list[tuple[_Input, Any, str]], multiple: int,
                        image_size: int | Sequence[int] | None = None
                        ) -> tuple[list[tuple[str, Any]], tuple[int, int], tuple[int, int]]:
        """Encoder pieces (standardised, padded, tokenised), the token grid and the unpadded pixel size.

        ``image_size`` (H, W) sets the size of the outputs when no input is an image (generation from coords
        alone); with image inputs their size is the size.
        """
        pixel_sizes = {(int(v.shape[-2]), int(v.shape[-1])) for s, v, _ in given if s.kind == "pixel"}
        if len(pixel_sizes) > 1:
            raise ModalityError(f"all pixel inputs must have the same height and width, got {sorted(pixel_sizes)}")
        size = next(iter(pixel_sizes), None)
        pieces: list[tuple[str, Any]] = []
        for spec, value, given_name in given:
            if spec.kind == "sequence":
                if isinstance(value, Tensor) and value.is_floating_point():  # raw (lon, lat): the coords tokenizer
                    pieces.append((spec.key, self._tokenize_coords(value)))
                    continue
                if not isinstance(value, Tensor) or value.dtype == torch.bool:
                    raise ModalityError(
                        f"{given_name}: give coordinates as float (lon, lat) [B, 2] or as token ids (int64 [B, N] from "
                        f"the coords tokenizer), got {getattr(value, 'dtype', type(value).__name__)}",
                        key="modalities")
                vocab = spec.modality.vocab_size or 0
                if value.numel() and (int(value.min()) < 0 or int(value.max()) >= vocab):
                    raise ModalityError(f"{given_name}: token ids must lie in [0, {vocab}), got range "
                                        f"[{int(value.min())}, {int(value.max())}]", key="modalities")
                pieces.append((spec.key, value))
                continue
            if not isinstance(value, Tensor):
                raise ModalityError(f"{spec.name}: expected a tensor, got {type(value).__name__}", key="modalities")
            if spec.kind == "pixel":
                if value.ndim != 4 or value.shape[1] != spec.modality.num_bands or not value.is_floating_point():
                    raise ModalityError(
                        f"{spec.name}: expected float [B, {spec.modality.num_bands}, H, W] "
                        f"({', '.join(spec.modality.bands)}), got {value.dtype} {list(value.shape)}",
                        key="modalities")
                if self.standardize:
                    mean, std = self._stats(spec.modality, value)
                    value = (value - mean) / std
                pieces.append((spec.key, self._pad(value, multiple)))
                continue
            # token modality: ids, or a raw map to tokenise. Integer [B, h, w] tensors are ids when given under
            # the exact token key (``tok_lulc@224``), when they match the token grid of the pixel inputs, or for
            # non-categorical modalities; any other integer LULC map is a class map.
            grid = None if size is None else (math.ceil(size[0] / multiple) * multiple // PATCH_SIZE,
                                               math.ceil(size[1] / multiple) * multiple // PATCH_SIZE)
            is_ids = not value.is_floating_point() and value.ndim == 3 and (
                given_name == spec.key or (grid is not None and tuple(value.shape[1:]) == grid)
                or not spec.modality.is_categorical)
            if is_ids:
                pieces.append((spec.key, value.long()))
                continue
            raw = value
            if raw.is_floating_point() and self.standardize and not spec.modality.is_categorical:
                raw = raw.unsqueeze(1) if raw.ndim == 3 else raw
                mean, std = self._stats(spec.modality, raw)
                raw = (raw - mean) / std
            if size is None:
                size = (int(raw.shape[-2]), int(raw.shape[-1]))
            tokenizer = self.tokenizer[spec.modality.token_key]
            with torch.no_grad():
                ids = tokenizer.encode_tokens(self._pad(raw, multiple))
            pieces.append((spec.key, ids.long()))
        grids = {(int(v.shape[-2]) // PATCH_SIZE, int(v.shape[-1]) // PATCH_SIZE) if v.ndim == 4 else
                 (int(v.shape[-2]), int(v.shape[-1])) for _, v in pieces if isinstance(v, Tensor) and v.ndim >= 3}
        if grids and image_size is not None:
            raise ConfigError("image_size sets the output size of generation without image inputs (from coords "
                              "alone); with image inputs the outputs have their size", key="image_size")
        if not grids:  # only sequences (coords): the outputs get image_size
            height, width = (image_size, image_size) if isinstance(image_size, int) else (
                tuple(image_size) if image_size is not None else (PRETRAINING_IMG_SIZE, PRETRAINING_IMG_SIZE))
            if min(height, width) < PATCH_SIZE:
                raise ConfigError(f"image_size must be at least {PATCH_SIZE} px, got {(height, width)}",
                                  key="image_size")
            grid = (math.ceil(height / multiple) * multiple // PATCH_SIZE,
                    math.ceil(width / multiple) * multiple // PATCH_SIZE)
            return pieces, grid, (int(height), int(width))
        if len(grids) != 1:
            raise ModalityError(f"inputs disagree on the token grid: {sorted(grids)}; give every image input the "
                                "same size (token ids at 1/16 of it)", key="modalities")
        grid = grids.pop()
        if size is None:
            size = (grid[0] * PATCH_SIZE, grid[1] * PATCH_SIZE)
        return pieces, grid, size

    # ---- generation -------------------------------------------------------------------------------------------

    def _selected_outputs(self, output_modalities: Sequence[str] | None) -> list[str]:
        if output_modalities is None:
            return list(self.outputs)
        selected = []
        for name in ([output_modalities] if isinstance(output_modalities, str) else output_modalities):
            match = name if name in self.outputs else next(
                (n for n, (_, k) in self.outputs.items() if k == resolve_output(name, key="output_modalities")[1]),
                None)
            if match is None:
                raise ModalityError(f"{name!r} is not an output of this model; outputs: {list(self.outputs)} "
                                    "(set them with `output_modalities` when building)", key="output_modalities")
            selected.append(match)
        return selected

    def _seed(self, seed: int | None) -> int:
        if seed is None:
            seed = self.seed
        if seed is None:  # reads (never reseeds) the global RNG, so seed_everything makes runs repeatable
            seed = int(torch.randint(0, 2**62, (1,)).item())
        return int(seed)

    @torch.no_grad()
    def generate_tokens(self, x: Tensor | Mapping[str, Any] | None = None, *, seed: int | None = None,
                        output_modalities: Sequence[str] | None = None, image_size: int | Sequence[int] | None = None,
                        **kwargs: Any) -> dict[str, Tensor]:
        """Token ids ``[B, h, w]`` of the outputs (no pixel decoding); coords: ids ``[B, 4]`` after ``[S_1]``."""
        tokens, _, _, _ = self._tokens(x, kwargs, self._seed(seed), self._selected_outputs(output_modalities),
                                       image_size)
        return tokens

    def _tokens(self, x: Any, kwargs: Mapping[str, Any], seed: int, names: list[str],
                image_size: int | Sequence[int] | None = None
                ) -> tuple[dict[str, Tensor], tuple[int, int], tuple[int, int], int]:
        given = self._collect(x, kwargs)
        multiple = self._size_multiple([self.outputs[n][1] for n in names])
        pieces, grid, size = self._prepare_inputs(given, multiple, image_size)
        first = next(v if isinstance(v, Tensor) else v["tensor"] for _, v in pieces)
        batch, device = int(first.shape[0]), first.device
        # Generation order is the configured order (chaining), restricted to the selected outputs.
        targets = [(n, self.outputs[n][1], self.outputs[n][0].kind == "sequence") for n in self.outputs if n in names]
        tokens = decode_chained(self.sampler.model, pieces, targets, self.sampling, make_generator(seed, device),
                                grid=grid, batch=batch, device=device, chained=self.chained)
        return {n: tokens[n] for n in names}, grid, size, multiple

    @torch.no_grad()
    def location_distribution(self, x: Tensor | Mapping[str, Any] | None = None, *, lat_chunk: int = 256,
                              **kwargs: Any) -> LocationDistribution:
        """P(location | inputs) on the coords vocabulary's 0.25 degree grid (needs ``coords`` among the outputs).

        Exact, not sampled: P(lat) x P(lon | lat) from two decoder steps over every latitude
        (:mod:`terramind_ft.models.terramind.geolocation`); conditioned on the inputs only.
        """
        name = next((n for n, (m, _) in self.outputs.items() if m.kind == "sequence"), None)
        if name is None:
            raise ModalityError("a location distribution needs coords among the outputs: build the model with "
                                "output_modalities=[..., 'coords']", key="output_modalities")
        key = self.outputs[name][1]
        pieces, _, _ = self._prepare_inputs(self._collect(x, kwargs), PATCH_SIZE)
        context, context_mask = self.sampler.model.encode_masked([(k, v, None) for k, v in pieces])
        text = self._coords_text_tokenizer()
        decoder = self.sampler.model.decoder_embeddings[key]
        grid = GridTokens.from_vocab(text.tokenizer.get_vocab(), decoder.vocab_size, source=text.source)
        return location_distribution(self.sampler.model, context, key, grid, start_id=SEQUENCE_START_ID,
                                     lat_chunk=lat_chunk, context_mask=context_mask)

    @torch.no_grad()
    def forward(self, x: Tensor | Mapping[str, Any] | None = None, *, timesteps: int | None = None,
                seed: int | None = None, output_modalities: Sequence[str] | None = None, progress: bool = False,
                verbose: bool = False, image_size: int | Sequence[int] | None = None,
                **kwargs: Any) -> dict[str, Tensor]:
        """Generate the outputs: ``{name: float32 [B, C, H, W]}`` (LULC: 10 class probabilities; coords:
        ``[B, 2]`` (lon, lat) in degrees, decoded by the coords tokenizer).

        ``timesteps``: DDIM steps of the diffusion decoders (default: the build value). ``seed``: makes the
        call reproducible (tokens and diffusion noise). ``output_modalities``: a subset of the configured
        outputs. ``verbose`` (the reference's name) or ``progress`` show the diffusion steps' progress.
        ``image_size``: (H, W) of the outputs when no input is an image (images from a location alone; default
        224). Values are physical units with ``standardize=True``, standardised units otherwise.
        """
        steps = self.timesteps if timesteps is None else int(timesteps)
        if steps < 1:
            raise ConfigError(f"must be >= 1, got {steps}", key="timesteps")
        seed = self._seed(seed)
        names = self._selected_outputs(output_modalities)
        tokens, grid, size, multiple = self._tokens(x, kwargs, seed, names, image_size)
        padded = (grid[0] * PATCH_SIZE, grid[1] * PATCH_SIZE)
        results: dict[str, Tensor] = {}
        for index, name in enumerate(names):
            modality, key = self.outputs[name]
            if modality.kind == "sequence":  # coords: (lon, lat) [B, 2] in degrees, NaN where not a location
                results[name] = self._coords_text_tokenizer().decode(tokens[name].cpu()).to(tokens[name].device)
                continue
            noise = torch.Generator().manual_seed((seed * _SEED_MIX + index + 1) % 2**63)
            decoded = self.tokenizer[key].decode_tokens(tokens[name], timesteps=steps, image_size=padded,
                                                        generator=noise, progress=progress or verbose)
            decoded = decoded[..., : size[0], : size[1]].float()
            if modality.is_categorical:
                decoded = decoded.softmax(dim=1)
            elif self.standardize:
                mean, std = self._stats(modality, decoded)
                decoded = decoded * std + mean
            results[name] = decoded
        return results

    def to_physical(self, name: str, values: Tensor) -> Tensor:
        """Output ``name`` given in standardised units (``standardize=False``) in physical units (LULC unchanged)."""
        modality, _ = self.outputs[self._selected_outputs([name])[0]]
        if modality.is_categorical:
            return values
        mean, std = self._stats(modality, values)
        return values * std + mean

    def extra_repr(self) -> str:
        return (f"size={self.size.name}, modalities={list(self.inputs)}, output_modalities={list(self.outputs)}, "
                f"standardize={self.standardize}, timesteps={self.timesteps}, sampling={self.sampling}, "
                f"chained={self.chained}")


# --------------------------------------------------------------------------------------------------------------
# Registry entries: terramind_v1_{tiny,small,base,large}_generate

register_size_variants(
    FULL_MODEL_REGISTRY, TerraMindGeneration, "_generate",
    lambda size: (f"TerraMind v1 {size.name} any-to-any generation; weights {size.hf_repo_id}/{size.hf_filename} "
                  "plus the tokenizers of the outputs. See TerraMindGeneration for the arguments."))
