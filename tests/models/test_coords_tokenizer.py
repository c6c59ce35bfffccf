"""Coordinates as a modality: the reference's text format and id layout, the round trip, and coords as a backbone
input. The tests build a small WordPiece vocabulary of the reference's layout in tmp_path."""

from __future__ import annotations

import math

import pytest
import torch

from coords_vocab import write_coords_vocab
from terramind_ft.errors import ConfigError, ModalityError
from terramind_ft.models.tokenizers.coords import location_text, terramind_v1_tokenizer_coords
from terramind_ft.registry import BACKBONE_REGISTRY

tokenizers = pytest.importorskip("tokenizers")


@pytest.fixture
def vocab_file(tmp_path):
    return write_coords_vocab(tmp_path / "config.json")


def test_text_is_the_references_on_the_quarter_degree_grid():
    assert location_text(-3.46, 40.1) == "lat=40.00 lon=-3.50 [EOS]"
    assert location_text(151.2093, -33.8688) == "lat=-33.75 lon=151.25 [EOS]"


def test_ids_layout_and_round_trip(vocab_file):
    tok = terramind_v1_tokenizer_coords(tokenizer_file=vocab_file)
    coords = torch.tensor([[-3.46, 40.1], [151.2093, -33.8688], [0.0, 0.0]])
    out = tok.encode(coords)
    ids, mask = out["tensor"], out["input_mask"]
    vocab = tok.tokenizer.get_vocab()
    assert ids.shape == (3, 3) and not mask.any()
    assert ids[0].tolist() == [vocab["lat=40.00"], vocab["lon=-3.50"], 3]  # lat, lon, [EOS] (id 3)
    back = tok.decode(ids)
    torch.testing.assert_close(back, torch.tensor([[-3.5, 40.0], [151.25, -33.75], [0.0, 0.0]]))
    assert math.isnan(float(tok.decode(torch.tensor([[5, 3, 0]]))[0, 0]))  # not a location -> NaN


def test_out_of_range_and_swapped_coords_are_refused(vocab_file):
    tok = terramind_v1_tokenizer_coords(tokenizer_file=vocab_file)
    with pytest.raises(ModalityError, match=r"looks like \(lat, lon\): give \(lon, lat\)"):
        tok.encode(torch.tensor([[45.0, 120.0]]))
    with pytest.raises(ModalityError, match=r"\[B, 2\]"):
        tok.encode(torch.tensor([1.0, 2.0]))


def test_no_vocabulary_no_tokenizer():
    with pytest.raises(ConfigError, match="tokenizer_file"):
        terramind_v1_tokenizer_coords(pretrained=False)


def test_coords_as_a_backbone_input(vocab_file):
    backbone = BACKBONE_REGISTRY.get("terramind_v1_tiny")(
        modalities=["S2L2A", "coords"], tokenizer_kwargs={"coords": {"tokenizer_file": str(vocab_file)}}).eval()
    x = {"S2L2A": torch.randn(2, 12, 32, 32), "coords": torch.tensor([[8.5, 47.4], [-122.4, 37.8]])}
    with torch.no_grad():
        with_coords = backbone(x)[-1]
        without = backbone({"S2L2A": x["S2L2A"]})[-1]
    assert with_coords.shape == without.shape  # image tokens out: the location is context, not a patch
    assert not torch.allclose(with_coords, without)  # ... that changes them
