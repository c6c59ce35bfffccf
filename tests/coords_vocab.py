"""A WordPiece vocabulary in the layout of TerraMind's coords tokenizer, written by the tests (the real one is
on the hub): the special tokens at ids 0-6, then one whitespace word per 0.25 degree value of lat and lon.
And a constructed coords decoder with a known answer (:func:`point_coords_decoder_at`)."""

from __future__ import annotations

from pathlib import Path

import torch

from terramind_ft.models.tokenizers.coords import SPECIAL_TOKENS


def write_coords_vocab(path: Path) -> Path:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    words = list(SPECIAL_TOKENS)
    words += [f"lat={i * 0.25:.2f}" for i in range(-360, 361)]
    words += [f"lon={i * 0.25:.2f}" for i in range(-720, 721)]
    tok = Tokenizer(models.WordPiece({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece()
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    tok.save(str(path))
    return path


def point_coords_decoder_at(terramind, chain: list[int]) -> None:
    """Make a TerraMind encoder-decoder's coords decoder answer ``chain``: its decoder becomes the identity (every
    residual branch zeroed) and the position embedding of step t points at token chain[t], so after position t
    the most likely next token is chain[t] whatever the inputs."""
    coords = terramind.decoder_embeddings["coords"]
    dim = coords.mod_emb.shape[-1]
    with torch.no_grad():
        for block in terramind.decoder:
            for linear in (block.self_attn.proj, block.cross_attn.proj, block.mlp.fc2):
                linear.weight.zero_()
                if linear.bias is not None:
                    linear.bias.zero_()
        coords.mod_emb.zero_()
        coords.token_emb.weight.mul_(1e-4)  # every other token: tiny, random
        gen = torch.Generator().manual_seed(1)
        for t, token in enumerate(chain):
            direction = torch.randn(dim, generator=gen)
            direction -= direction.mean()  # what LayerNorm keeps of it
            coords.pos_emb[0, t] = 20 * direction / direction.norm()
            coords.token_emb.weight[token] = direction / direction.norm()
