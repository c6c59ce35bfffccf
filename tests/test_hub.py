"""Where weights come from (HF cache / local file) and how they are copied into a model (terramind_ft.hub)."""

from __future__ import annotations

import warnings

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

import terramind_ft.hub as hub
from terramind_ft.errors import CheckpointError
from terramind_ft.hub import CheckpointWarning, load_checkpoint, read_state_dict, resolve_checkpoint
from terramind_ft.models.terramind.encoder import TerraMindEncoder
from terramind_ft.registry import BACKBONE_REGISTRY

RAW6 = ["S2L2A", "S2L1C", "RGB", "S1GRD", "S1RTC", "DEM"]


def official_layout_checkpoint(path, modalities=RAW6):
    """A flat state dict like TerraMind_v1_tiny.pt: encoder keys plus decoder-side keys the backbone ignores."""
    donor = TerraMindEncoder(modalities, size="tiny")
    state = dict(donor.state_dict())
    state["mask_token"] = torch.randn(1, 1, 192)
    state["decoder.0.self_attn.qkv.weight"] = torch.randn(576, 192)
    state["decoder_embeddings.tok_lulc@224.mod_emb"] = state.get("encoder_embeddings.untok_dem@224.mod_emb",
                                                                 torch.zeros(1, 1, 192))  # shared storage
    torch.save(state, path)
    return state


def point_download_at(monkeypatch, path):
    calls = []

    def fake(repo_id, filename, **kwargs):
        calls.append((repo_id, filename))
        return str(path)

    monkeypatch.setattr(hub, "hf_hub_download", fake)
    return calls


def test_pretrained_loads_official_layout_through_hf_download(tmp_path, monkeypatch):
    state = official_layout_checkpoint(tmp_path / "TerraMind_v1_tiny.pt")
    calls = point_download_at(monkeypatch, tmp_path / "TerraMind_v1_tiny.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("error", CheckpointWarning)
        model = BACKBONE_REGISTRY.build("terramind_v1_tiny", modalities=["S1GRD", "DEM"], pretrained=True)
    assert calls == [("ibm-esa-geospatial/TerraMind-1.0-tiny", "TerraMind_v1_tiny.pt")]
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key
    report = model.load_report
    assert report.ok and not report.missing and len(report.loaded) == len(model.state_dict())
    assert "mask_token" in report.unused and "decoder.0.self_attn.qkv.weight" in report.unused


def test_offline_error_says_how_to_supply_the_file():
    # conftest sets HF_HUB_OFFLINE=1 and an empty HF_HOME: the real hf_hub_download must fail
    with pytest.raises(CheckpointError) as info:
        TerraMindEncoder(["S2L2A"], size="tiny", pretrained=True)
    message = str(info.value)
    for needle in ("TerraMind_v1_tiny.pt", "ibm-esa-geospatial/TerraMind-1.0-tiny", "ckpt_path", "HF_HUB_OFFLINE",
                   "pretrained: false"):
        assert needle in message


def test_safetensors_and_wrapped_checkpoints(tmp_path):
    donor = TerraMindEncoder(["S1GRD"], size="tiny")
    state = {k: v.clone().contiguous() for k, v in donor.state_dict().items()}
    save_file(state, str(tmp_path / "tm.safetensors"))
    model = TerraMindEncoder(["S1GRD"], size="tiny", ckpt_path=str(tmp_path / "tm.safetensors"))
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    # a Lightning-style checkpoint: weights under 'state_dict' with a 'model.encoder.' prefix
    torch.save({"epoch": 3, "state_dict": {f"model.encoder.{k}": v for k, v in state.items()}}, tmp_path / "l.ckpt")
    assert set(read_state_dict(tmp_path / "l.ckpt")) == {f"model.encoder.{k}" for k in state}
    model = TerraMindEncoder(["S1GRD"], size="tiny", ckpt_path=str(tmp_path / "l.ckpt"))
    assert model.load_report.stripped_prefix == "model.encoder."
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_shape_mismatch_and_missing_modality_are_reported_once(tmp_path):
    state = official_layout_checkpoint(tmp_path / "tm.pt", modalities=["S2L2A", "S1GRD"])
    state["encoder_embeddings.untok_s2l2a@224.proj.weight"] = torch.zeros(1)
    state["encoder_embeddings.untok_sen1grd@224.proj.weight"] = torch.zeros(192, 100)
    torch.save(state, tmp_path / "tm.pt")
    with pytest.warns(CheckpointWarning) as record:
        model = TerraMindEncoder(["S1GRD", "RGB"], size="tiny", ckpt_path=str(tmp_path / "tm.pt"))
    assert len(record) == 1
    text = str(record[0].message)
    assert "encoder_embeddings.untok_sen2rgb@224.{mod_emb, proj.weight}" in text  # RGB is not in the file
    assert "encoder_embeddings.untok_sen2rgb@224.pos_emb" in model.load_report.expected_missing  # sin-cos table
    assert "encoder_embeddings.untok_sen1grd@224.proj.weight: checkpoint [192, 100] vs model [192, 512]" in text
    assert not torch.equal(model.encoder_embeddings["untok_sen1grd@224"].proj.weight[:, :100], torch.zeros(192, 100))


def test_missing_encoder_blocks_raise(tmp_path):
    state = official_layout_checkpoint(tmp_path / "tm.pt", modalities=["S1GRD"])
    del state["encoder.3.mlp.fc1.weight"]
    torch.save(state, tmp_path / "tm.pt")
    with pytest.raises(CheckpointError, match="encoder.3.mlp.fc1.weight"):
        TerraMindEncoder(["S1GRD"], size="tiny", ckpt_path=str(tmp_path / "tm.pt"))


def test_bad_files_are_checkpoint_errors(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        resolve_checkpoint(pretrained=False, ckpt_path=tmp_path / "nope.pt", repo_id=None, filename=None)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pt.*weights_only"):
        read_state_dict(tmp_path / "junk.pt")
    torch.save({"epoch": 1}, tmp_path / "empty.pt")
    with pytest.raises(CheckpointError, match="holds no tensors"):
        read_state_dict(tmp_path / "empty.pt")
    assert resolve_checkpoint(pretrained=False, ckpt_path=None, repo_id="x/y", filename="z.pt") is None


class Pair(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(2, 3)
        self.sampler = nn.Module()
        self.sampler.model = nn.Linear(2, 3)


def test_generic_loader_with_key_map_and_expected_keys():
    source = {"weight": torch.ones(3, 2), "bias": torch.zeros(3), "unused": torch.zeros(1)}
    model = Pair()
    report = load_checkpoint(
        model, source, key_map=lambda k: k.split(".")[-1], expected_missing=[], what="pair", warn=False)
    assert torch.equal(model.a.weight, torch.ones(3, 2)) and torch.equal(model.sampler.model.weight, torch.ones(3, 2))
    assert sorted(report.loaded) == ["a.bias", "a.weight", "sampler.model.bias", "sampler.model.weight"]
    assert report.unused == ["unused"] and report.ok
    partial = load_checkpoint(Pair(), {"a.weight": torch.ones(3, 2)}, expected_missing=[r"sampler\..*"], warn=False)
    assert partial.missing == ["a.bias"] and len(partial.expected_missing) == 2 and not partial.ok
    with pytest.raises(CheckpointError, match="a.bias"):
        load_checkpoint(Pair(), {"a.weight": torch.ones(3, 2)}, strict_prefixes=("a.",))


def test_an_unreachable_hub_fails_fast_with_the_reason(monkeypatch, tmp_path):
    """Without HF_HUB_OFFLINE the client retried for ~40 s before the error; one short connect decides now."""
    import socket
    import time

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    attempts = []

    def no_route(address, timeout=None):  # no real traffic leaves the test
        attempts.append((address, timeout))
        raise OSError(101, "Network is unreachable")

    monkeypatch.setattr(socket, "create_connection", no_route)
    start = time.perf_counter()
    with pytest.raises(CheckpointError) as err:
        hub.download("ibm-esa-geospatial/TerraMind-1.0-tiny", "TerraMind_v1_tiny.pt", what="terramind_v1_tiny")
    assert time.perf_counter() - start < 5 and len(attempts) == 1 and attempts[0][1] == 3.0
    assert "unreachable" in str(err.value) and "ckpt_path" in str(err.value)
