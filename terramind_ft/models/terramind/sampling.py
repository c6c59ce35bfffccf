"""Token sampling for TerraMind generation and TiM: ROAR decoding with temperature, top-k and top-p.

The procedure follows the reference (4M ``GenerationSampler`` with the "roar" scheme as used by TerraTorch
1.2.11), written from its description in the TerraMind model spec (sections 4 and 5.2):

* one ROAR step decodes ``n`` still-unknown positions of a target modality, chosen in a random order; the
  encoder sees every visible token (inputs, earlier targets, positions of this target decoded in earlier
  steps), the decoder queries are ``mask_token + pos_emb + mod_emb`` of the chosen positions;
* per token: temperature ~0 -> argmax; otherwise top-k filter, top-p filter on the *un-tempered* logits
  (keeping the first token that crosses the threshold), then ``softmax(logits / temperature)`` and a
  multinomial draw;
* the token schedule of ``steps`` steps splits the tokens into near-equal integer parts, largest first.

Deliberate differences from the reference:

* multi-step schedules work (the reference passes the total token count to every step, so its second step
  has nothing left to decode and crashes);
* randomness comes from a ``torch.Generator`` passed in by the caller; the global RNG is never reseeded
  (the reference calls ``torch.manual_seed`` inside every step);
* one random decoding order is shared by the whole batch (the reference draws one per sample); this keeps
  every sample's visible set identical, so no padding masks are needed. Each sample still sees a uniformly
  random order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from terramind_ft.errors import ConfigError
from terramind_ft.models.tokenizers.coords import (
    MAX_LENGTH,
    PAD_ID,
    SENTINEL_IDS,
    SEQUENCE_START_ID,
    SEQUENCE_STOP_IDS,
)

# |temperature| at or below this means greedy (argmax) decoding, as in the reference.
GREEDY_TEMPERATURE = 1e-10


@dataclass(frozen=True)
class SamplingSettings:
    """How tokens of one target modality are drawn.

    As in the reference: ``temperature`` 0 gives deterministic argmax decoding; ``top_k`` is a number of tokens
    (an int), or a fraction of the vocabulary (a float in (0, 1)), and 0 switches it off; ``top_p`` in (0, 1) is
    the nucleus, and 0 (or >= 1) switches it off. ``decoding_steps`` is the number of ROAR steps (1 = every token
    in one parallel decoder pass).
    """

    temperature: float = 1.0
    top_p: float = 0.8
    top_k: int | float = 0
    decoding_steps: int = 1

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ConfigError(f"temperature must be >= 0 (0 = greedy argmax), got {self.temperature}",
                              key="temperature")
        if isinstance(self.top_k, bool) or self.top_k < 0 or (
                isinstance(self.top_k, float) and self.top_k >= 1 and not self.top_k.is_integer()):
            raise ConfigError(f"top_k must be a count >= 0 or a fraction of the vocabulary in (0, 1) (0 = no top-k "
                              f"filter), got {self.top_k}", key="top_k")
        if not 0.0 <= self.top_p:
            raise ConfigError(f"top_p must be >= 0 (0 or >= 1 = no nucleus filter), got {self.top_p}", key="top_p")
        if self.decoding_steps < 1:
            raise ConfigError(f"decoding_steps must be >= 1, got {self.decoding_steps}", key="decoding_steps")

    @property
    def greedy(self) -> bool:
        return abs(self.temperature) <= GREEDY_TEMPERATURE

    def as_greedy(self) -> SamplingSettings:
        return SamplingSettings(temperature=0.0, top_p=self.top_p, top_k=self.top_k,
                                decoding_steps=self.decoding_steps)


def linear_token_schedule(num_tokens: int, steps: int) -> list[int]:
    """Tokens decoded per step: near-equal integer parts, largest first, zeros dropped (sums to num_tokens)."""
    steps = max(1, min(steps, num_tokens)) if num_tokens > 0 else 1
    base, extra = divmod(num_tokens, steps)
    schedule = [base + 1] * extra + [base] * (steps - extra)
    return [n for n in schedule if n > 0]


def top_k_count(k: int | float, vocab_size: int) -> int:
    """Tokens the top-k filter keeps: ``k`` itself, or for a float in (0, 1) that fraction of the vocabulary
    (at least one token); 0 means no filter."""
    if isinstance(k, float) and 0 < k < 1:
        return max(1, int(k * vocab_size))
    return int(k)


def filter_top_k(logits: Tensor, k: int | float) -> Tensor:
    """Set every logit below the k-th largest (along the last axis) to -inf (``k`` as in :func:`top_k_count`);
    k 0 or k >= V is a no-op."""
    k = top_k_count(k, logits.shape[-1])
    if k <= 0 or k >= logits.shape[-1]:
        return logits
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def filter_top_p(logits: Tensor, p: float) -> Tensor:
    """Nucleus filter: keep the smallest set of top tokens whose probability reaches ``p``.

    Sorted descending, a token is removed when the cumulative probability *before* it already exceeds ``p``,
    i.e. the first token that crosses the threshold is kept, and the top token is always kept. ``p <= 0`` and
    ``p >= 1`` are no-ops (0 is the reference's "off", not "keep one token").
    """
    if p <= 0.0 or p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    remove_sorted = cumulative > p
    # Shift right by one: the token that makes the sum cross p stays; the top token always stays.
    remove_sorted[..., 1:] = remove_sorted[..., :-1].clone()
    remove_sorted[..., 0] = False
    remove = torch.zeros_like(remove_sorted).scatter(-1, order, remove_sorted)
    return logits.masked_fill(remove, float("-inf"))


def sample_tokens(logits: Tensor, settings: SamplingSettings, generator: torch.Generator | None = None) -> Tensor:
    """Draw one token id per position from ``logits`` [..., V] -> int64 [...].

    Greedy settings give the argmax and consume no randomness. Otherwise top-k, then top-p on the
    un-tempered logits, then a multinomial draw from ``softmax(filtered / temperature)`` using ``generator``.
    """
    if settings.greedy:
        return logits.argmax(dim=-1)
    filtered = filter_top_p(filter_top_k(logits.float(), settings.top_k), settings.top_p)
    probs = (filtered / settings.temperature).softmax(dim=-1)
    flat = probs.reshape(-1, probs.shape[-1])
    draws = torch.multinomial(flat, 1, generator=generator)
    return draws.reshape(probs.shape[:-1])


def make_generator(seed: int | None, device: torch.device | str) -> torch.Generator:
    """A generator on ``device``: seeded with ``seed``, or with a seed drawn from the global RNG when None.

    Drawing a seed *reads* the global RNG (so ``seed_everything`` makes runs repeatable) but never reseeds it.
    """
    if seed is None:
        seed = int(torch.randint(0, 2**62, (1,)).item())
    generator = torch.Generator(device=device)
    generator.manual_seed(int(seed))
    return generator


@dataclass
class TokenTarget:
    """One target modality being decoded: its decoder key, token grid and the ids decoded so far.

    ``decoded`` marks positions already known (shared by the batch); ``ids`` [B, h*w] holds their values.
    """

    key: str
    grid: tuple[int, int]
    ids: Tensor
    decoded: Tensor

    @classmethod
    def empty(cls, key: str, grid: tuple[int, int], batch: int, device: torch.device) -> TokenTarget:
        n = grid[0] * grid[1]
        return cls(key, grid, torch.zeros(batch, n, dtype=torch.long, device=device),
                   torch.zeros(n, dtype=torch.bool, device=device))

    @property
    def complete(self) -> bool:
        return bool(self.decoded.all())

    def visible_positions(self) -> Tensor:
        return self.decoded.nonzero().flatten()


def roar_decode(model, inputs: Sequence[tuple[str, Any]], target: TokenTarget, setting: SamplingSettings,
                generator: torch.Generator | None) -> TokenTarget:
    """Decode the unknown positions of ``target`` with ROAR steps; returns it, filled.

    ``model`` is a :class:`~terramind_ft.models.terramind.decoder.TerraMind` (anything with ``encode_masked`` and
    ``decode_logits``). ``inputs`` are ``(encoder key, value)`` pairs, all fully visible (earlier targets of a
    chained generation among them: :func:`decode_chained`); the target's own already-decoded positions are
    visible in its later steps whenever the model has an encoder embedding for it.
    """
    remaining = (~target.decoded).nonzero().flatten()
    for count in linear_token_schedule(int(remaining.numel()), setting.decoding_steps):
        remaining = (~target.decoded).nonzero().flatten()
        if count < remaining.numel():
            # Random decoding order; a single full step needs none (the decoder is permutation
            # equivariant), which keeps greedy single-step decoding free of any randomness.
            order = torch.randperm(remaining.numel(), generator=generator,
                                   device=generator.device if generator is not None else remaining.device)
            selected = remaining[order.to(remaining.device)[:count]]
        else:
            selected = remaining
        pieces: list[tuple[str, Any, Tensor | None]] = [(key, value, None) for key, value in inputs]
        if model.has_encoder_embedding(target.key) and bool(target.decoded.any()):
            grid_ids = target.ids.view(target.ids.shape[0], *target.grid)
            pieces.append((target.key, grid_ids, target.visible_positions()))
        context, context_mask = model.encode_masked(pieces)
        logits = model.decode_logits(context, target.key, selected, target.grid, context_mask)
        target.ids[:, selected] = sample_tokens(logits, setting, generator).to(target.ids.dtype)
        target.decoded[selected] = True
    return target


def sequence_decode(model, context: Tensor, key: str, setting: SamplingSettings,
                    generator: torch.Generator | None, *, start_id: int, stop_ids: Sequence[int],
                    max_tokens: int, pad_id: int = 0, context_mask: Tensor | None = None) -> Tensor:
    """Autoregressive decoding of a sequence target (coords): int64 ``[B, max_tokens]`` after ``start_id``.

    As the reference's autoregressive step: the decoder starts from the sentinel ``start_id`` and appends one
    token per pass (``model.decode_sequence_logits``, causal self-attention over the tokens so far), drawn with
    :func:`sample_tokens`, until every row has produced one of ``stop_ids`` or ``max_tokens`` were drawn. A row
    that has stopped is filled with ``pad_id`` (the reference keeps drawing for it and discards the tail).
    """
    batch = context.shape[0]
    ids = torch.full((batch, 1), start_id, dtype=torch.long, device=context.device)
    stop = torch.tensor(list(stop_ids), dtype=torch.long, device=context.device)
    done = torch.zeros(batch, dtype=torch.bool, device=context.device)
    for _ in range(max_tokens):
        logits = model.decode_sequence_logits(context, key, ids, context_mask=context_mask)[:, -1]
        step = sample_tokens(logits, setting, generator).to(torch.long)
        step = torch.where(done, torch.full_like(step, pad_id), step)
        ids = torch.cat([ids, step[:, None]], dim=1)
        done |= torch.isin(step, stop)
        if bool(done.all()):
            break
    out = ids[:, 1:]
    if out.shape[1] < max_tokens:
        out = torch.cat([out, out.new_full((batch, max_tokens - out.shape[1]), pad_id)], dim=1)
    return out


def sequence_as_input(ids: Tensor) -> dict[str, Tensor]:
    """Generated sequence ids ``[B, L]`` as an encoder input ``{"tensor", "input_mask"}``.

    The reference merges the decoded span into the input sequence, which drops the sentinels: a sentinel and
    what follows it become padding, and columns that are padding in every row are cut. The padding left in some
    rows is masked out by ``TerraMind.encode_masked``.
    """
    cut = torch.isin(ids, torch.tensor(SENTINEL_IDS, device=ids.device)).cumsum(dim=1) > 0
    ids = ids.masked_fill(cut, PAD_ID)
    used = (ids != PAD_ID).any(dim=0).nonzero()
    ids = ids[:, : int(used.max()) + 1 if used.numel() else 1]
    return {"tensor": ids, "input_mask": ids == PAD_ID}


def decode_chained(model, inputs: Sequence[tuple[str, Any]], targets: Sequence[tuple[str, str, bool]],
                   setting: SamplingSettings, generator: torch.Generator | None, *, grid: tuple[int, int],
                   batch: int, device: torch.device, chained: bool = True,
                   provided: Mapping[str, Tensor] | None = None) -> dict[str, Tensor]:
    """Ids of ``targets`` ``(name, decoder key, is_sequence)``, decoded one after the other: image tokens by ROAR
    (``[B, h, w]`` on ``grid``), sequences (coords) autoregressively (``[B, 4]``). ``inputs`` are fully visible
    ``(encoder key, value)`` pieces; with ``chained``, every finished target the model has an encoder embedding
    for becomes visible to the next (generation and TiM). ``provided`` ids are used instead of decoding."""
    visible = list(inputs)
    provided = provided or {}
    tokens: dict[str, Tensor] = {}
    for name, key, is_sequence in targets:
        if is_sequence:
            if name in provided:
                ids = provided[name]
            else:
                context, context_mask = model.encode_masked([(k, v, None) for k, v in visible])
                ids = sequence_decode(model, context, key, setting, generator, start_id=SEQUENCE_START_ID,
                                      stop_ids=SEQUENCE_STOP_IDS, max_tokens=MAX_LENGTH, pad_id=PAD_ID,
                                      context_mask=context_mask)
            value: Any = sequence_as_input(ids)
        else:
            target = TokenTarget.empty(key, grid, batch, device)
            if name in provided:
                target.ids.copy_(provided[name].reshape(batch, -1))
                target.decoded.fill_(True)
            roar_decode(model, visible, target, setting, generator)
            ids = value = target.ids.view(batch, *grid)
        tokens[name] = ids
        if chained and model.has_encoder_embedding(key):
            visible.append((key, value))
    return tokens
