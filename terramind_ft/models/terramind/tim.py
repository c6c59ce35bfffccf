"""TiM, "Thinking in Modalities": ``terramind_v1_{tiny,small,base,large}_tim`` in ``BACKBONE_REGISTRY``.

A TiM backbone is the TerraMind encoder backbone plus a frozen copy of the pretrained encoder-decoder (the
*generator*). On every forward the generator produces token ids of the ``tim_modalities`` (LULC by default)
from the inputs; the ids are embedded by the encoder's token embedding and appended after the inputs, and the
encoder runs over all of them. The merge (``mean`` by default) covers inputs and TiM modalities alike.

What it does the way the reference (TerraTorch 1.2.11) does, from the spec (section 4):

* generator = ``TerraMind`` with the inputs' encoder embeddings and the TiM modalities' decoder embeddings;
  its weights are a second copy of the checkpoint: file key ``k`` loads into the encoder as ``k`` and into
  the generator as ``sampler.model.k`` (a missing generator tensor is an error);
* sampling: ROAR, ``tim_temps`` 1.0, ``tim_top_p`` 0.8, ``tim_top_k`` 0, ``tim_decoding_steps`` 1 while
  training; TiM modalities generated one after the other, earlier ones conditioning later ones
  (``tim_chained_generations``);
* generated ids are appended after the inputs, in ``tim_modalities`` order; ``coords`` (a location) is decoded
  autoregressively from the sentinel ``[S_1]`` as "lat lon [EOS]" and, being a sequence, is attended to by the
  image tokens but left out of the ``mean``/``max`` merge.

What it does differently, and why:

* **Deterministic evaluation.** In ``eval()`` mode tokens are decoded greedily (argmax), so validation and test
  metrics do not depend on a random draw. ``tim_eval_sampling=True`` keeps sampling (seeded with
  ``tim_seed`` on every forward, so still repeatable).
* **No global RNG reseeding.** Sampling uses a ``torch.Generator`` (seeded with ``tim_seed``, or with a seed
  read once from the global RNG).
* **The generator never learns and never costs gradients**: ``requires_grad=False``, run under ``no_grad``,
  kept in eval mode. The encoder embeddings stay trainable (the reference shares them with the frozen
  generator, which silently freezes them).
* **Weight sharing when provably identical.** A part of the encoder (an input embedding, a block, the final
  norm) whose parameters are all frozen and equal to the generator's copy is *shared* with the generator at the
  next forward, releasing the copy (a frozen encoder halves the encoder memory). It is un-shared, from the
  still-unchanged values, as soon as that part requires gradients again, and before any ``load_state_dict``.
  ``share_frozen_weights=False`` turns this off.
* **Token cache.** ``tim_cache="memory"`` or ``tim_cache=<directory>`` stores the generated ids per sample,
  keyed by ``cache_keys`` (e.g. file names, passed to ``forward``) or by a hash of the sample's input values,
  together with a fingerprint of the generator and its settings. Meant for runs without random augmentation:
  a cached sample is never generated again (with sampling, every epoch reuses the one draw).
* **TiM tokens may be given.** An input under a TiM modality's name (ids ``[B, h, w]``; coords ids ``[B, L]``)
  is used as is; only the missing TiM modalities are generated.
* **Clear build-time errors** for what the generator cannot serve: band subsets, new modalities, a TiM modality
  that is also an input, unknown names.

The caller's input dict is never modified.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from terramind_ft.errors import ConfigError, ModalityError
from terramind_ft.hub import load_checkpoint, read_state_dict, resolve_checkpoint
from terramind_ft.io import atomic_path
from terramind_ft.modalities import MODALITIES, PATCH_SIZE, PRETRAINING_IMG_SIZE, TOKEN_MODALITIES, resolve_input, \
    resolve_output
from terramind_ft.models.terramind.decoder import TerraMind
from terramind_ft.models.terramind.encoder import BackboneOutput, InputSpec, TerraMindEncoder, parse_modalities
from terramind_ft.models.terramind.sampling import SamplingSettings, decode_chained, make_generator, sequence_as_input
from terramind_ft.models.terramind.sizes import get_size, register_size_variants
from terramind_ft.registry import BACKBONE_REGISTRY

GENERATOR_PREFIX = "sampler.model."
# The encoder's and the generator's blocks/norms must load; embeddings may be absent from partial files.
REQUIRED_PREFIXES = ("encoder.", "encoder_norm.", GENERATOR_PREFIX)
MEMORY_CACHE = "memory"

_SEPARATE, _SHARED, _DIFFERS = "separate", "shared", "differs"


class FrozenGenerator(nn.Module):
    """Holds the generator ``model`` (so its keys read ``sampler.model.*`` as in the reference) frozen in eval."""

    def __init__(self, model: TerraMind):
        super().__init__()
        self.model = model
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> FrozenGenerator:
        return super().train(False)


def _replace_parameter(root: nn.Module, old: nn.Parameter, new: nn.Parameter) -> None:
    """Point every reference to ``old`` inside ``root`` (ties included) at ``new``."""
    for module in root.modules():
        for name, param in module._parameters.items():
            if param is old:
                module._parameters[name] = new


class TerraMindTiM(TerraMindEncoder):
    """TerraMind encoder backbone with TiM token generation (see the module docstring).

    Args (beyond those of :class:`~terramind_ft.models.terramind.encoder.TerraMindEncoder`):
        tim_modalities: modalities to generate: LULC, NDVI, S2L2A, S1GRD, S1RTC, DEM, coords (default [LULC]).
        tim_temps, tim_top_p, tim_top_k, tim_decoding_steps: sampling while training (reference defaults).
        tim_chained_generations: later TiM modalities see the tokens generated for earlier ones.
        tim_eval_sampling: keep sampling in eval mode (default False: greedy argmax, deterministic).
        tim_seed: seed of the sampling generator (None: one seed read from the global RNG at first use).
        tim_cache: None, ``"memory"`` or a directory: cache generated ids per sample (see module docstring).
        share_frozen_weights: share frozen, identical encoder parts with the generator (saves memory).
        activation_checkpointing: recompute the encoder's blocks in the backward pass (see TerraMindEncoder).
    """

    def __init__(
        self,
        modalities: Sequence[str] | None = None,
        *,
        size: str = "base",
        tim_modalities: Sequence[str] = ("LULC",),
        pretrained: bool = False,
        ckpt_path: str | None = None,
        bands: Mapping[str, Sequence[str]] | None = None,
        merge_method: str | None = "mean",
        img_size: int | tuple[int, int] = PRETRAINING_IMG_SIZE,
        tim_temps: float = 1.0,
        tim_top_p: float = 0.8,
        tim_top_k: int | float = 0,
        tim_decoding_steps: int = 1,
        tim_chained_generations: bool = True,
        tim_eval_sampling: bool = False,
        tim_seed: int | None = None,
        tim_cache: str | os.PathLike | None = None,
        share_frozen_weights: bool = True,
        modality_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        padding: str = "reflect",
        tokenizer_kwargs: Mapping[str, Mapping[str, Any]] | None = None,
        activation_checkpointing: bool = False,
    ):
        backbone = get_size(size).registry_name
        if isinstance(tim_modalities, str):
            tim_modalities = [tim_modalities]
        input_names = _check_inputs(modalities, bands, backbone)
        tim = _resolve_tim_modalities(tim_modalities, input_names, backbone)
        tim_names = [name for name, _ in tim]  # encoder input names of the TiM modalities
        super().__init__(
            [*input_names, *tim_names], size=size, pretrained=False, ckpt_path=None,
            merge_method=merge_method, img_size=img_size, modality_drop_rate=modality_drop_rate,
            drop_path_rate=drop_path_rate, padding=padding, tokenizer_kwargs=tokenizer_kwargs,
            activation_checkpointing=activation_checkpointing,
        )
        self.pretrained = bool(pretrained)  # also decides whether tokenizers of token inputs are pretrained
        self.ckpt_path = ckpt_path
        self.tim_modalities = [str(name) for name in tim_modalities]
        self._tim_names = tim_names
        self._tim_keys = {name: key for name, key in tim}
        self.input_names = list(input_names)
        self.sampling = SamplingSettings(temperature=float(tim_temps), top_p=float(tim_top_p), top_k=tim_top_k,
                                         decoding_steps=int(tim_decoding_steps))
        self.tim_chained_generations = bool(tim_chained_generations)
        self.tim_eval_sampling = bool(tim_eval_sampling)
        self.tim_seed = tim_seed
        self.share_frozen_weights = bool(share_frozen_weights)

        # The generator holds only what it uses: input embeddings, plus token embeddings of TiM modalities that
        # must be visible to its encoder (earlier ones when chained; all when decoding in several steps).
        input_keys = [self.specs[name].key for name in input_names]
        tim_keys = [key for _, key in tim]
        visible_tim = tim_keys if self.sampling.decoding_steps > 1 else (
            tim_keys[:-1] if self.tim_chained_generations else [])
        self.sampler = FrozenGenerator(TerraMind(self.size, encoder_keys=[*input_keys, *visible_tim],
                                                 decoder_keys=tim_keys, img_size=img_size))
        self._share_pairs = self._find_share_pairs()
        if not self._load_weights(pretrained, ckpt_path):
            # No checkpoint: the generator starts as a copy of the (random) encoder, as it would be of a
            # checkpoint, so that the two only diverge through fine-tuning.
            with torch.no_grad():
                for encoder_part, generator_part in self._share_pairs:
                    for (_, a), (_, b) in zip(encoder_part.named_parameters(), generator_part.named_parameters()):
                        b.copy_(a)
        self._share_state = [_SEPARATE] * len(self._share_pairs)
        self.register_load_state_dict_pre_hook(_unshare_before_load)
        for encoder_part, generator_part in self._share_pairs:
            for part in (encoder_part, generator_part):
                part.register_load_state_dict_pre_hook(self._unshare_before_partial_load)

        self.tim_cache = tim_cache
        self._memory_cache: dict[str, dict[str, Tensor]] = {}
        self._cache_dir = None if tim_cache in (None, MEMORY_CACHE) else Path(tim_cache).expanduser()
        if self._cache_dir is not None:
            self._cache_dir.mkdir(parents=True, exist_ok=True)
        self._fingerprint: str | None = None
        self._generators: dict[str, torch.Generator] = {}

    # ---- loading ----------------------------------------------------------------------------------------------

    def _load_weights(self, pretrained: bool, ckpt_path: str | None) -> bool:
        path = resolve_checkpoint(pretrained=pretrained, ckpt_path=ckpt_path, repo_id=self.size.hf_repo_id,
                                  filename=self.size.hf_filename, what=f"{self.size.registry_name}_tim")
        if path is None:
            return False
        state = read_state_dict(path)
        self._check_checkpoint_size(state, str(path))
        if any(k.startswith(GENERATOR_PREFIX) for k in state):
            key_map = None  # a saved TiM: encoder and generator each have their own tensors
        else:  # the official layout: every file key feeds both the encoder (k) and the generator (sampler.model.k)
            def key_map(model_key: str) -> str:
                return model_key[len(GENERATOR_PREFIX):] if model_key.startswith(GENERATOR_PREFIX) else model_key
        report = load_checkpoint(self, state, key_map=key_map, strict_prefixes=REQUIRED_PREFIXES,
                                 expected_missing=[r"missing_mod_token"], what=f"{self.size.registry_name}_tim",
                                 warn=False)
        report.source = str(path)
        report.emit()
        self.load_report = report
        return True

    # ---- weight sharing between the frozen generator and frozen encoder parts --------------------------------

    def _find_share_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        generator = self.sampler.model
        pairs = [(self.encoder_embeddings[key], generator.encoder_embeddings[key])
                 for key in generator.encoder_embeddings if key in self.encoder_embeddings]
        pairs += list(zip(self.encoder, generator.encoder))
        pairs.append((self.encoder_norm, generator.encoder_norm))
        return pairs

    def _share(self, index: int) -> None:
        encoder_part, generator_part = self._share_pairs[index]
        for name, param in encoder_part.named_parameters():
            _replace_parameter(self.sampler.model, generator_part.get_parameter(name), param)
        self._share_state[index] = _SHARED

    def _unshare(self, index: int) -> None:
        """Give the generator its own frozen copy again (the values are still those it had when shared)."""
        _, generator_part = self._share_pairs[index]
        for _, param in list(generator_part.named_parameters()):
            copy = nn.Parameter(param.detach().clone(), requires_grad=False)
            _replace_parameter(self.sampler.model, param, copy)
        self._share_state[index] = _SEPARATE

    def _unshare_all(self) -> None:
        for index, state in enumerate(self._share_state):
            if state == _SHARED:
                self._unshare(index)
            self._share_state[index] = _SEPARATE
        self._fingerprint = None

    def _unshare_before_partial_load(self, module: nn.Module, *args: Any) -> None:
        self._unshare_all()

    def update_weight_sharing(self) -> None:
        """Share frozen encoder parts that equal the generator's copy; un-share parts that train again.

        Called at every forward. Sound because a part that requires no gradient cannot change through the
        optimizer, and a part that starts requiring gradients is un-shared before its first forward, i.e.
        before any gradient could reach it.
        """
        if not getattr(self, "share_frozen_weights", False):
            return
        for index, (encoder_part, generator_part) in enumerate(self._share_pairs):
            frozen = not any(p.requires_grad for p in encoder_part.parameters())
            state = self._share_state[index]
            if state == _SHARED and not frozen:
                self._unshare(index)
            elif state == _DIFFERS and not frozen:
                self._share_state[index] = _SEPARATE
            elif state == _SEPARATE and frozen:
                same = all(
                    a.shape == b.shape and a.dtype == b.dtype and a.device == b.device and torch.equal(a, b)
                    for (_, a), (_, b) in zip(encoder_part.named_parameters(), generator_part.named_parameters())
                )
                if same:
                    self._share(index)
                else:
                    self._share_state[index] = _DIFFERS

    def shared_parameter_count(self) -> int:
        """Number of generator parameter values currently shared with the encoder (not held twice)."""
        encoder_ids = {id(p) for name, p in self.named_parameters() if not name.startswith("sampler.")}
        return sum(p.numel() for p in self.sampler.parameters() if id(p) in encoder_ids)

    def train(self, mode: bool = True) -> TerraMindTiM:
        super().train(mode)
        self.sampler.train(False)
        return self

    # ---- token generation -------------------------------------------------------------------------------------

    @property
    def generates_greedily(self) -> bool:
        return self.sampling.greedy or (not self.training and not self.tim_eval_sampling)

    def _settings(self) -> SamplingSettings:
        return self.sampling.as_greedy() if self.generates_greedily else self.sampling

    def _random_generator(self, device: torch.device) -> torch.Generator | None:
        if self.generates_greedily and self.sampling.decoding_steps == 1:
            return None  # argmax in one pass consumes no randomness
        if not self.training:  # evaluation with sampling: the same draw on every call
            return make_generator(self.tim_seed if self.tim_seed is not None else 0, device)
        key = str(device)
        if key not in self._generators:
            self._generators[key] = make_generator(self.tim_seed, device)
        return self._generators[key]

    def _generator_inputs(self, inputs: list[tuple[InputSpec, Any]]) -> tuple[dict[str, Any], list, tuple[int, int]]:
        """Encoder feed (unpadded pixels, token ids), generator pieces (padded) and the token grid."""
        pixel_sizes = {(int(v.shape[-2]), int(v.shape[-1])) for s, v in inputs if s.kind == "pixel"}
        if len(pixel_sizes) > 1:
            raise ModalityError(f"all pixel inputs must have the same height and width, got {sorted(pixel_sizes)}")
        pixel_size = next(iter(pixel_sizes), None)
        feed: dict[str, Any] = {}
        pieces: list[tuple[str, Any]] = []
        grid = None
        for spec, value in inputs:
            if spec.kind == "pixel":
                if not isinstance(value, Tensor) or value.ndim != 4:
                    raise ModalityError(f"{spec.name}: expected float pixels [B, C, H, W], got {type(value).__name__}",
                                        key="modalities")
                padded = self._pad(value, PATCH_SIZE)
                feed[spec.name] = value
                pieces.append((spec.key, padded))
                grid = grid or (padded.shape[-2] // PATCH_SIZE, padded.shape[-1] // PATCH_SIZE)
            elif spec.kind == "token":
                ids, _ = self.token_ids(spec, value, pixel_size)
                ids = ids.reshape(ids.shape[0], *_ids_grid(ids))
                feed[spec.name] = ids
                pieces.append((spec.key, ids))
                grid = grid or (int(ids.shape[1]), int(ids.shape[2]))
            else:
                if isinstance(value, Tensor) and value.is_floating_point():
                    value = self._tokenize(spec, value)
                feed[spec.name] = value
                pieces.append((spec.key, value))
        if grid is None:
            raise ModalityError("TiM needs at least one image input (pixels or token ids) to know the token grid; "
                                f"got only {[s.name for s, _ in inputs]}", key="modalities")
        return feed, pieces, grid

    def generate_tokens(self, x: Tensor | Mapping[str, Any] | None = None, *, cache_keys: Sequence[str] | None = None,
                        **kwargs: Any) -> dict[str, Tensor]:
        """Token ids ``[B, h, w]`` of every TiM modality for the inputs (given ones are passed through)."""
        _, tokens = self._prepare(x, kwargs, cache_keys)
        return tokens

    def _prepare(self, x: Any, kwargs: Mapping[str, Any], cache_keys: Sequence[str] | None
                 ) -> tuple[dict[str, Any], dict[str, Tensor]]:
        given = self._collect_inputs(x, kwargs)
        inputs = [(s, v) for s, v in given if s.name not in self._tim_keys]
        provided = {s.name: v for s, v in given if s.name in self._tim_keys}
        if not inputs:
            raise ModalityError(f"TiM needs inputs besides the TiM modalities; configured inputs: {self.input_names}",
                                key="modalities")
        feed, pieces, grid = self._generator_inputs(inputs)
        batch = int(next(v.shape[0] for _, v in pieces if isinstance(v, Tensor)))
        device = next(v.device for _, v in pieces if isinstance(v, Tensor))
        for name, ids in provided.items():
            if self._is_sequence(name):  # coords ids [B, L] as given
                provided[name] = ids.long()
                continue
            ids = ids.reshape(ids.shape[0], *_ids_grid(ids)).long()
            if tuple(ids.shape[1:]) != grid:
                raise ModalityError(f"{name}: given TiM tokens have grid {tuple(ids.shape[1:])}, the inputs {grid}")
            provided[name] = ids
        self.update_weight_sharing()
        tokens = self._tokens_with_cache(inputs, pieces, grid, batch, device, provided, cache_keys)
        return feed, tokens

    def _run_generator(self, pieces: list[tuple[str, Any]], grid: tuple[int, int], batch: int,
                       device: torch.device, provided: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Ids of every TiM modality, in order: image tokens by ROAR ([B, h, w]), coords autoregressively ([B, 4]);
        when chained, each finished one is visible to the generator's encoder for the next."""
        targets = [(name, self._tim_keys[name], self._is_sequence(name)) for name in self._tim_names]
        with torch.no_grad():
            return decode_chained(self.sampler.model, pieces, targets, self._settings(),
                                  self._random_generator(device), grid=grid, batch=batch, device=device,
                                  chained=self.tim_chained_generations, provided=provided)

    def _is_sequence(self, name: str) -> bool:
        return self.specs[name].kind == "sequence"

    # ---- cache ------------------------------------------------------------------------------------------------

    def _generator_fingerprint(self) -> str:
        if self._fingerprint is None:
            digest = hashlib.blake2b(digest_size=16)
            gen = self.sampler.model
            settings = self._settings()
            digest.update(repr((self.size.name, list(gen.encoder_embeddings), self._tim_names, self.input_names,
                                self.tim_chained_generations, settings)).encode())
            for tensor in (gen.mask_token, gen.decoder_norm.weight, gen.decoder_proj_context.bias):
                digest.update(tensor.detach().float().cpu().numpy().tobytes())
            self._fingerprint = digest.hexdigest()
        return self._fingerprint + ("g" if self.generates_greedily else "s")

    def _sample_keys(self, inputs: list[tuple[InputSpec, Any]], batch: int,
                     cache_keys: Sequence[str] | None) -> list[str]:
        prefix = self._generator_fingerprint()
        if cache_keys is not None:
            if len(cache_keys) != batch:
                raise ConfigError(f"cache_keys has {len(cache_keys)} entries for a batch of {batch}",
                                  key="cache_keys")
            return [hashlib.blake2b(f"{prefix}|{k}".encode(), digest_size=20).hexdigest() for k in cache_keys]
        keys = []
        for i in range(batch):
            digest = hashlib.blake2b(prefix.encode(), digest_size=20)
            for spec, value in inputs:
                sample = value[i] if isinstance(value, Tensor) else value
                if isinstance(sample, Tensor):
                    sample = sample.detach().contiguous().cpu()
                    digest.update(f"{spec.name}{tuple(sample.shape)}{sample.dtype}".encode())
                    digest.update(sample.numpy().tobytes() if sample.dtype != torch.bfloat16
                                  else sample.float().numpy().tobytes())
                else:
                    digest.update(repr((spec.name, sample)).encode())
            keys.append(digest.hexdigest())
        return keys

    def _cache_get(self, key: str) -> dict[str, Tensor] | None:
        hit = self._memory_cache.get(key)
        if hit is None and self._cache_dir is not None:
            path = self._cache_dir / f"{key}.pt"
            if path.is_file():
                hit = torch.load(path, map_location="cpu", weights_only=True)
                self._memory_cache[key] = hit
        return hit

    def _cache_put(self, key: str, tokens: dict[str, Tensor]) -> None:
        self._memory_cache[key] = tokens
        if self._cache_dir is not None:
            with atomic_path(self._cache_dir / f"{key}.pt") as tmp:  # readers never see a half-written file
                torch.save(tokens, tmp)

    def _tokens_with_cache(self, inputs, pieces, grid, batch, device, provided, cache_keys) -> dict[str, Tensor]:
        missing = [name for name in self._tim_names if name not in provided]
        if self.tim_cache is None or not missing:
            return self._run_generator(pieces, grid, batch, device, provided)
        keys = self._sample_keys(inputs, batch, cache_keys)
        cached = [self._cache_get(k) for k in keys]
        todo = [i for i, hit in enumerate(cached) if hit is None or any(n not in hit for n in missing)]
        if todo:
            index = torch.tensor(todo, device=device)
            sub_pieces = [(key, value.index_select(0, index) if isinstance(value, Tensor) else value)
                          for key, value in pieces]
            sub_provided = {n: v.index_select(0, index) for n, v in provided.items()}
            fresh = self._run_generator(sub_pieces, grid, len(todo), device, sub_provided)
            for row, i in enumerate(todo):
                entry = {n: fresh[n][row].to("cpu", torch.int16) for n in missing}
                self._cache_put(keys[i], entry)
                cached[i] = entry
        tokens = {n: torch.stack([c[n] for c in cached]).to(device=device, dtype=torch.long) for n in missing}
        tokens.update(provided)
        return {name: tokens[name] for name in self._tim_names}

    # ---- forward ----------------------------------------------------------------------------------------------

    def droppable(self, spec: Any) -> bool:
        """The generated TiM modalities are never dropped by ``modality_drop_rate``; only the inputs are."""
        return spec.name not in self._tim_names

    def forward(self, x: Tensor | Mapping[str, Any] | None = None, *, cache_keys: Sequence[str] | None = None,
                **kwargs: Any) -> BackboneOutput:
        """Generate the TiM modalities, append them after the inputs and run the encoder (merge over all)."""
        feed, tokens = self._prepare(x, kwargs, cache_keys)
        feed.update({name: sequence_as_input(ids) if self._is_sequence(name) else ids for name, ids in tokens.items()})
        return super().forward(feed)

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, tim_modalities={self.tim_modalities}, sampling={self.sampling}, "
                f"eval={'sampling' if self.tim_eval_sampling else 'greedy'}, cache={self.tim_cache!r}")


def _unshare_before_load(module: TerraMindTiM, *args: Any) -> None:
    module._unshare_all()


def _ids_grid(ids: Tensor) -> tuple[int, int]:
    if ids.ndim == 3:
        return int(ids.shape[1]), int(ids.shape[2])
    side = int(round(ids.shape[1] ** 0.5))
    if ids.ndim != 2 or side * side != ids.shape[1]:
        raise ModalityError(f"token ids must be [B, h, w] (or [B, N] with a square N), got {list(ids.shape)}")
    return side, side


# --------------------------------------------------------------------------------------------------------------
# Build-time checks


def _check_inputs(modalities: Any, bands: Any, backbone: str) -> list[str]:
    if bands:
        raise ModalityError(
            f"TiM cannot use band subsets ({dict(bands)}): its frozen generator was pretrained on every band of "
            "each modality and has no weights for a subset. Alternatives: pass all pretrained bands (fill the "
            "missing ones with 0, the pretraining mean after standardisation), or use the backbone "
            f"{backbone} (no TiM), which supports `bands`.", key="bands")
    parsed = parse_modalities(modalities)
    names = []
    for spec, _ in parsed:
        if spec.is_new:
            raise ModalityError(
                f"TiM cannot use the new modality {spec.name!r}: the frozen generator has no pretrained embedding "
                f"for it, so it cannot condition generation on it. Use only pretrained modalities "
                f"({', '.join(MODALITIES)}) with TiM, or the backbone {backbone} (no TiM) for new modalities.",
                key="modalities")
        names.append(spec.name)
    return names


def _resolve_tim_modalities(tim_modalities: Sequence[str], input_names: Sequence[str], backbone: str
                            ) -> list[tuple[str, str]]:
    """``(encoder input name, token key)`` per TiM modality, with the combination checked."""
    if isinstance(tim_modalities, str):
        tim_modalities = [tim_modalities]
    if not tim_modalities:
        raise ConfigError(f"tim_modalities is empty; give at least one of {', '.join(TOKEN_MODALITIES)}, or use "
                          f"the backbone {backbone} without TiM", key="tim_modalities")
    input_modalities = {resolve_input(n)[0]: n for n in input_names}
    result: list[tuple[str, str]] = []
    for name in tim_modalities:
        canonical, key = resolve_output(str(name), key="tim_modalities")
        if canonical in input_modalities:
            raise ModalityError(f"{name!r} is a TiM modality and also the input {input_modalities[canonical]!r}: a "
                                "modality the model already sees needs no generation. Remove it from "
                                "tim_modalities (or from modalities).", key="tim_modalities")
        if any(key == k for _, k in result):
            raise ModalityError(f"TiM modality {name!r} is listed twice", key="tim_modalities")
        # The encoder input name: the user's name where it resolves to the token embedding (LULC, NDVI),
        # the exact token key otherwise (S2L2A as a *token* modality is tok_sen2l2a@224).
        try:
            as_input = resolve_input(str(name))[1]
        except ModalityError:
            as_input = None
        result.append((str(name) if as_input == key else key, key))
    return result


# --------------------------------------------------------------------------------------------------------------
# Registry entries: terramind_v1_{tiny,small,base,large}_tim

register_size_variants(
    BACKBONE_REGISTRY, TerraMindTiM, "_tim",
    lambda size: (f"TerraMind v1 {size.name} backbone with TiM (frozen {size.decoder_depth}-block generator); "
                  f"weights {size.hf_repo_id}/{size.hf_filename}. See TerraMindTiM for the arguments."))
