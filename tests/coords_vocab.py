"""A WordPiece vocabulary in the layout of TerraMind's coords tokenizer, written by the tests (the real one is
on the hub): the special tokens at ids 0-6, then one whitespace word per 0.25 degree value of lat and lon."""

from __future__ import annotations

from pathlib import Path

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
