"""The full TerraMind encoder-decoder has the official checkpoint layout (issue 2 item 6a).

Built on the meta device (no memory, no weights), ``TerraMind(size).state_dict()`` must equal the manifest
``checkpoint_keys_<size>.json``: same keys in the same order, same shapes, float32, parameters vs persistent
buffers, and the same tensor sharing (``same_tensor_as``: tied logits, shared modality embeddings).
"""

from __future__ import annotations

import json

import pytest
import torch

from terramind_ft.models.terramind.decoder import TerraMind
from terramind_ft.registry import FULL_MODEL_REGISTRY

SIZES = ["tiny", "small", "base", "large"]
EXPECTED_COUNTS = {"tiny": 306, "small": 350, "base": 374, "large": 674}


def _manifest(ref_dir, size):
    return json.loads((ref_dir / f"checkpoint_keys_{size}.json").read_text())


@pytest.mark.parametrize("size", SIZES)
def test_state_dict_equals_official_manifest(terramind_ref, size):
    manifest = _manifest(terramind_ref, size)
    with torch.device("meta"):
        model = TerraMind(size)
    state = model.state_dict(keep_vars=True)
    entries = manifest["keys"]

    assert len(state) == EXPECTED_COUNTS[size] == manifest["num_keys"] == len(entries)
    assert list(state) == [e["key"] for e in entries], "key order differs from the official file"
    parameters = {name for name, _ in model.named_parameters(remove_duplicate=False)}
    buffers = {name for name, _ in model.named_buffers(remove_duplicate=False)}
    for entry in entries:
        key, tensor = entry["key"], state[entry["key"]]
        assert list(tensor.shape) == entry["shape"], key
        assert tensor.dtype == torch.float32, key
        assert (key in parameters) == (entry["kind"] == "parameter"), key
        assert (key in buffers) == (entry["kind"] == "buffer"), key

    # Sharing: every same_tensor_as pair is one tensor object; nothing else is shared.
    shared = {e["key"]: e["same_tensor_as"] for e in entries if e.get("same_tensor_as")}
    assert shared, "the manifest lists tied/shared tensors"
    for key, other in shared.items():
        assert state[key] is state[other], f"{key} must be the same tensor as {other}"
    unique = {id(t) for t in state.values()}
    assert len(unique) == manifest["num_unique_tensors"] == len(state) - len(shared)
    n_params = sum(p.numel() for p in model.parameters())  # parameters() counts shared ones once
    assert n_params == manifest["num_parameters_unique"]


def test_tied_logits_and_shared_mod_emb_stay_tied_after_loading(terramind_ref, tmp_path):
    """The golden checkpoint (official layout, subset) loads into the registry model; ties survive loading."""
    golden = torch.load(terramind_ref / "golden_TerraMind_v1_tiny_subset.pt", map_location="cpu", weights_only=True)
    model = FULL_MODEL_REGISTRY.build(
        "terramind_v1_tiny_encdec", ckpt_path=str(terramind_ref / "golden_TerraMind_v1_tiny_subset.pt"),
        encoder_modalities=["untok_sen2l2a@224", "untok_sen1grd@224", "tok_lulc@224"],
        decoder_modalities=["tok_lulc@224"])
    state = model.state_dict()
    assert len(state) == 12 * 12 + 2 + 4 * 22 + 2 + 2 + 1 + 9 + 4
    for key, value in state.items():
        assert torch.equal(value, golden[key]), key
    dec = model.decoder_embeddings["tok_lulc@224"]
    assert dec.to_logits.weight is dec.token_emb.weight
    assert dec.mod_emb is model.encoder_embeddings["tok_lulc@224"].mod_emb
    assert model.load_report is not None and model.load_report.ok

    # A checkpoint that lacks a decoder block is refused with the key named (no silent random decoder).
    broken = {k: v for k, v in golden.items() if not k.startswith("decoder.3.")}
    path = tmp_path / "broken.pt"
    torch.save(broken, path)
    with pytest.raises(Exception, match="decoder.3"):
        FULL_MODEL_REGISTRY.build("terramind_v1_tiny_encdec", ckpt_path=str(path),
                                  encoder_modalities=["untok_sen2l2a@224"], decoder_modalities=["tok_lulc@224"])
