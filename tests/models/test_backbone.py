"""TerraMind encoder backbone: key layout, sizes, inputs (any H/W, tokens, bare tensor), merges, bands,
new modalities, modality dropout, errors. Random tiny models at 32-96 px; parity with the reference lives in
test_backbone_parity.py."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
import torch.nn.functional as F

from terramind_ft.errors import CheckpointError, ConfigError, ModalityError
from terramind_ft.hub import CheckpointWarning
from terramind_ft.modalities import S2L2A_BANDS
from terramind_ft.models.terramind.embeddings import ImageEncoderEmbedding
from terramind_ft.models.terramind.encoder import BackboneOutput, TerraMindEncoder
from terramind_ft.models.terramind.sizes import SIZES
from terramind_ft.registry import BACKBONE_REGISTRY, FULL_MODEL_REGISTRY

RAW6 = ["S2L2A", "S2L1C", "RGB", "S1GRD", "S1RTC", "DEM"]
# Every backbone input the official checkpoints hold an embedding for (9 names + 4 explicit token keys).
ALL_INPUTS = RAW6 + ["LULC", "NDVI", "Coordinates", "tok_sen2l2a@224", "tok_sen1grd@224", "tok_sen1rtc@224",
                     "tok_dem@224"]
# Parameter counts of the reference (spec §1.2, TerraTorch 1.2.11, pretrained=False).
REFERENCE_PARAMS = {  # size: (only S2L2A, the 6 raw embeddings)
    "tiny": (5_923_968, 6_957_120),
    "small": (22_464_768, 24_531_072),
    "base": (87_313_920, 91_446_528),
    "large": (305_137_664, 310_647_808),
}


def tiny(modalities, **kwargs) -> TerraMindEncoder:
    return TerraMindEncoder(modalities, size="tiny", **kwargs).eval()


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


# ---- layout -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", list(SIZES))
def test_state_dict_equals_official_backbone_keys(size, terramind_ref):
    entries = json.loads((terramind_ref / f"checkpoint_keys_{size}.json").read_text())["keys"]
    with torch.device("meta"):
        model = TerraMindEncoder(ALL_INPUTS, size=size)
    got = {k: list(v.shape) for k, v in model.state_dict().items()}
    want = {e["key"]: e["shape"] for e in entries if e["backbone_keeps"]}
    assert got == want
    # a subset of modalities keeps only their embeddings
    with torch.device("meta"):
        subset = TerraMindEncoder(["S2L1C", "S1GRD"], size=size)
    keys = set(subset.state_dict())
    assert keys <= set(want)
    assert {k.split(".")[1] for k in keys if k.startswith("encoder_embeddings.")} == {
        "untok_sen2l1c@224", "untok_sen1grd@224"}


@pytest.mark.parametrize("size", list(SIZES))
def test_parameter_counts_match_reference(size):
    only_s2, raw6 = REFERENCE_PARAMS[size]
    with torch.device("meta"):
        assert n_params(TerraMindEncoder(["S2L2A"], size=size)) == only_s2
        assert n_params(TerraMindEncoder(RAW6, size=size)) == raw6


def test_sizes_table():
    assert [(s.dim, s.encoder_depth, s.decoder_depth, s.num_heads) for s in SIZES.values()] == [
        (192, 12, 4, 3), (384, 12, 6, 6), (768, 12, 12, 12), (1024, 24, 24, 16)]
    assert [s.mlp_hidden for s in SIZES.values()] == [768, 1536, 2048, 2730]
    assert [s.gated_mlp for s in SIZES.values()] == [False, False, True, True]
    assert SIZES["base"].hf_repo_id == "ibm-esa-geospatial/TerraMind-1.0-base"
    assert SIZES["large"].hf_filename == "TerraMind_v1_large.pt"
    assert all(s.head_dim == 64 for s in SIZES.values())


def test_registry_entries_and_attributes():
    model = BACKBONE_REGISTRY.build("terramind_v1_tiny", modalities=["S2L2A", "S1GRD"])
    assert isinstance(model, TerraMindEncoder)
    assert (model.embed_dim, model.patch_size, model.modalities) == (192, 16, ["S2L2A", "S1GRD"])
    assert model.out_channels == [192] * 12
    assert {f"terramind_v1_{s}" for s in SIZES} <= set(BACKBONE_REGISTRY.names())


# ---- forward ------------------------------------------------------------------------------------------------


def test_output_contract_and_backward():
    model = tiny(["S2L2A", "S1GRD"]).train()
    x = {"S2L2A": torch.randn(2, 12, 32, 48), "S1GRD": torch.randn(2, 2, 32, 48)}
    out = model(x)
    assert isinstance(out, BackboneOutput) and len(out) == 12
    assert all(o.shape == (2, 6, 192) for o in out)
    assert (out.grid, out.image_size, out.modalities) == ((2, 3), (32, 48), ["S2L2A", "S1GRD"])
    # only the last layer is normalised (unit variance per token with the initial LayerNorm weight)
    raw = tiny(["S2L2A", "S1GRD"], merge_method=None)(x)
    assert torch.allclose(raw[-1].std(-1, unbiased=False), torch.ones(2, 12), atol=1e-3)
    assert not torch.allclose(raw[-2].std(-1, unbiased=False), torch.ones(2, 12), atol=1e-1)
    out[-1].sum().backward()
    assert model.encoder_embeddings["untok_sen1grd@224"].proj.weight.grad.abs().sum() > 0
    assert model.encoder[0].attn.qkv.weight.grad.abs().sum() > 0
    assert out[2:5].grid == (2, 3) and len(out.select([2, 5, -1])) == 3


def test_patch_embedding_is_channel_fastest_linear():
    emb = ImageEncoderEmbedding(3, 8, patch_size=4, image_size=8)
    x = torch.randn(2, 3, 8, 12)
    # reference: b c (nh ph) (nw pw) -> b (nh nw) (ph pw c), then the bias-free Linear
    patches = x.reshape(2, 3, 2, 4, 3, 4).permute(0, 2, 4, 3, 5, 1).reshape(2, 6, 48)
    tokens, emb_part = emb.forward_embed(x)
    assert torch.allclose(tokens, emb.proj(patches), atol=1e-5)
    assert emb_part.shape == (1, 6, 8)


def test_non_square_and_non_multiple_of_16_are_padded():
    model = tiny(["S1GRD"])
    x = torch.randn(1, 2, 70, 50)
    with torch.no_grad():
        out = model(x)
        manual = model(F.pad(x, (0, 14, 0, 10), mode="reflect"))
    assert out.grid == (5, 4) and out.image_size == (70, 50) and out[0].shape == (1, 20, 192)
    assert manual.image_size == (80, 64)
    assert torch.allclose(out[-1], manual[-1])
    zero = tiny(["S1GRD"], padding="zero")
    zero.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert torch.allclose(zero(x)[-1], model(F.pad(x, (0, 14, 0, 10)))[-1])
        assert not torch.allclose(zero(x)[-1], out[-1])
        # smaller than the padding: reflect is impossible, zero padding is used
        assert model(torch.randn(1, 2, 5, 7)).grid == (1, 1)


def test_position_table_is_interpolated_for_other_sizes():
    emb = ImageEncoderEmbedding(2, 16, image_size=64)  # 4x4 table
    x = torch.zeros(1, 2, 32, 96)  # zero pixels: tokens = pos_emb + mod_emb
    table = F.interpolate(emb.pos_emb.reshape(1, 4, 4, 16).permute(0, 3, 1, 2), size=(2, 6), mode="bicubic",
                          align_corners=False).permute(0, 2, 3, 1).reshape(1, 12, 16)
    assert torch.allclose(emb(x), table + emb.mod_emb, atol=1e-6)


def test_bare_tensor_and_kwargs_inputs():
    model = tiny(["S2L2A", "S1GRD"])
    s2, s1 = torch.randn(1, 12, 32, 32), torch.randn(1, 2, 32, 32)
    with torch.no_grad():
        ref = model({"S2L2A": s2, "S1GRD": s1})[-1]
        assert torch.allclose(model(S2L2A=s2, S1GRD=s1)[-1], ref)
        assert torch.allclose(model({"S2L2A": s2}, S1GRD=s1)[-1], ref)
        assert torch.allclose(model({"s2l2a": s2, "sen1grd": s1})[-1], ref)  # aliases of configured inputs
        single = model(s2)
    assert single.modalities == ["S2L2A"] and single[0].shape == (1, 4, 192)


def test_token_ids_non_square_and_range_check():
    model = tiny(["S1GRD", "LULC"])
    ids = torch.randint(0, 4375, (2, 2, 3))
    with torch.no_grad():
        out = model({"S1GRD": torch.randn(2, 2, 32, 48), "LULC": ids})
    assert out.grid == (2, 3) and out[-1].shape == (2, 6, 192)
    with pytest.raises(ModalityError, match=r"LULC: token ids must lie in \[0, 4375\)"):
        model({"S1GRD": torch.randn(2, 2, 32, 48), "LULC": ids + 4375})
    only_tokens = model({"LULC": ids})
    assert only_tokens.image_size == (32, 48)


class FakeTokenizer(torch.nn.Module):
    """Stands in for terramind_v1_tokenizer_lulc: ids = argmax class of each 16x16 patch's first pixel."""

    def __init__(self, pretrained=False, ckpt_path=None):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(1))
        self.calls = []

    def encode(self, x):
        self.calls.append((tuple(x.shape), torch.is_grad_enabled()))
        return x[:, :, ::16, ::16].argmax(1) * self.weight.long()


def test_raw_token_maps_go_through_the_frozen_tokenizer(monkeypatch):
    monkeypatch.setitem(FULL_MODEL_REGISTRY._entries, "terramind_v1_tokenizer_lulc", FakeTokenizer)
    model = tiny(["S1GRD", "LULC"]).train()
    s1 = torch.randn(1, 2, 40, 40)
    classes = torch.randint(0, 10, (1, 40, 40))
    with pytest.warns(UserWarning, match="tokenizer terramind_v1_tokenizer_lulc is built with random weights"):
        out = model({"S1GRD": s1, "LULC": classes})  # integer class map of the pixel size -> tokenizer
    tokenizer = model._tokenizers["LULC"]
    assert tokenizer.calls == [((1, 10, 48, 48), False)]  # one-hot, padded to 48, run without gradients
    assert not tokenizer.weight.requires_grad and not tokenizer.training
    assert not any(k.startswith("tokenizer") for k in model.state_dict())
    ids = classes[:, ::16, ::16]
    model.eval()
    with torch.no_grad():
        direct = model({"S1GRD": s1, "LULC": ids})
        via_map = model({"S1GRD": s1, "LULC": F.one_hot(classes, 10).permute(0, 3, 1, 2).float()})
    assert torch.allclose(via_map[-1], direct[-1]) and out.grid == (3, 3)
    with pytest.raises(ModalityError, match=r"LULC: class ids must lie in \[0, 10\)"):
        model({"S1GRD": s1, "LULC": classes + 10})


def test_missing_tokenizer_is_a_clear_error(monkeypatch):
    monkeypatch.delitem(FULL_MODEL_REGISTRY._entries, "terramind_v1_tokenizer_ndvi", raising=False)
    model = tiny(["NDVI"])
    with pytest.raises(ModalityError, match="terramind_v1_tokenizer_ndvi.*integer token ids"):
        model({"NDVI": torch.rand(1, 1, 32, 32)})


# ---- merges -------------------------------------------------------------------------------------------------


def test_merge_methods_agree_with_each_other():
    x = {"S2L2A": torch.randn(2, 12, 32, 32), "S1GRD": torch.randn(2, 2, 32, 32)}
    base = tiny(["S2L2A", "S1GRD"], merge_method=None)
    outs = {}
    for method in ("mean", "max", "concat", "dict", None):
        model = tiny(["S2L2A", "S1GRD"], merge_method=method)
        model.load_state_dict(base.state_dict(), strict=False)
        with torch.no_grad():
            outs[method] = model(x)
    raw = outs[None][5]
    assert raw.shape == (2, 8, 192)
    s2, s1 = raw[:, :4], raw[:, 4:]
    assert torch.allclose(outs["dict"][5]["S2L2A"], s2) and list(outs["dict"][5]) == ["S2L2A", "S1GRD"]
    assert torch.allclose(outs["mean"][5], (s2 + s1) / 2, atol=1e-6)
    assert torch.allclose(outs["max"][5], torch.maximum(s2, s1))
    assert torch.allclose(outs["concat"][5], torch.cat([s2, s1], -1))


def test_concat_uses_configured_order_and_missing_token():
    model = tiny(["S2L2A", "S1GRD", "DEM"], merge_method="concat")
    assert model.out_channels == [576] * 12
    assert torch.equal(model.missing_mod_token, torch.zeros(192))  # defined initialisation
    s2, s1, dem = torch.randn(1, 12, 32, 32), torch.randn(1, 2, 32, 32), torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        ordered = model({"S2L2A": s2, "S1GRD": s1, "DEM": dem})[-1]
        shuffled = model({"DEM": dem, "S2L2A": s2, "S1GRD": s1})[-1]
        partial = model({"DEM": dem, "S2L2A": s2})[-1]
    assert torch.allclose(ordered, shuffled, atol=1e-5)
    assert partial.shape == (1, 4, 576)
    assert torch.equal(partial[..., 192:384], torch.zeros(1, 4, 192))  # S1GRD slot holds missing_mod_token


def test_coords_sequence_is_excluded_from_mean_but_kept_in_dict():
    model = tiny(["S1GRD", "coords"], merge_method="dict")
    coords = torch.randint(4, 30000, (2, 4))
    with torch.no_grad():
        out = model({"S1GRD": torch.randn(2, 2, 32, 32), "coords": coords})
    assert out[0]["coords"].shape == (2, 4, 192) and out[0]["S1GRD"].shape == (2, 4, 192)
    mean = tiny(["S1GRD", "coords"])
    with torch.no_grad():
        assert mean({"S1GRD": torch.randn(2, 2, 32, 32), "coords": coords})[0].shape == (2, 4, 192)
    with pytest.raises(ModalityError, match="at least one image modality"):
        mean({"coords": coords})


def test_modality_dropout_only_while_training_and_keeps_one():
    model = tiny(["S2L2A", "S1GRD", "DEM"], modality_drop_rate=0.7, merge_method="dict")
    x = {"S2L2A": torch.randn(1, 12, 16, 16), "S1GRD": torch.randn(1, 2, 16, 16), "DEM": torch.randn(1, 1, 16, 16)}
    model.train()
    with torch.no_grad():  # dropout follows the training flag, not autograd
        kept = [len(model(x)[0]) for _ in range(12)]
    assert min(kept) >= 1 and max(kept) <= 3 and len(set(kept)) > 1
    model.eval()
    with torch.no_grad():
        assert all(len(model(x)[0]) == 3 for _ in range(5))


def test_drop_path_changes_training_outputs_only():
    model = tiny(["S1GRD"], drop_path_rate=0.5)
    x = torch.randn(4, 2, 16, 16)
    with torch.no_grad():
        a, b = model(x)[-1], model(x)[-1]
        model.train()
        c = model(x)[-1]
    assert torch.equal(a, b) and not torch.allclose(a, c)
    assert model.encoder[0].drop_path == 0.0 and model.encoder[-1].drop_path == pytest.approx(0.5)


# ---- bands and new modalities ---------------------------------------------------------------------------------


def save_random_checkpoint(path, modalities):
    donor = tiny(modalities)
    torch.save(donor.state_dict(), path)
    return donor


def test_band_subset_copies_pretrained_columns_and_reports_unknown(tmp_path):
    ckpt = tmp_path / "tm.pt"
    donor = save_random_checkpoint(ckpt, ["S2L2A"])
    bands = ["RED", "B03", "NIR_NARROW", "THERMAL"]
    with pytest.warns(CheckpointWarning, match=r"bands \['THERMAL'\] are not pretrained bands of S2L2A"):
        model = tiny(["S2L2A"], ckpt_path=str(ckpt), bands={"S2L2A": bands})
    old = donor.encoder_embeddings["untok_sen2l2a@224"].proj.weight.view(192, 256, 12)
    new = model.encoder_embeddings["untok_sen2l2a@224"].proj.weight.view(192, 256, 4)
    for j, index in enumerate([S2L2A_BANDS.index("RED"), S2L2A_BANDS.index("GREEN"), S2L2A_BANDS.index("NIR_NARROW")]):
        assert torch.equal(new[:, :, j], old[:, :, index])
    assert not torch.allclose(new[:, :, 3], old[:, :, 11])
    with torch.no_grad():
        assert model(torch.randn(1, 4, 32, 32))[0].shape == (1, 4, 192)
    with pytest.raises(ModalityError, match=r"expected 4 channels \(RED, B03, NIR_NARROW, THERMAL\), got 12"):
        model(torch.randn(1, 12, 32, 32))
    # a checkpoint saved from the adapted model loads as is
    torch.save(model.state_dict(), tmp_path / "adapted.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("error", CheckpointWarning)
        again = tiny(["S2L2A"], ckpt_path=str(tmp_path / "adapted.pt"), bands={"S2L2A": bands})
    assert torch.equal(again.encoder_embeddings["untok_sen2l2a@224"].proj.weight, new.reshape(192, -1))


def test_new_modality_is_random_and_expected(tmp_path):
    ckpt = tmp_path / "tm.pt"
    save_random_checkpoint(ckpt, ["S2L2A"])
    with warnings.catch_warnings():
        warnings.simplefilter("error", CheckpointWarning)  # new modalities are expected to be missing
        model = tiny(["S2L2A", {"HLS": 6}], ckpt_path=str(ckpt), patch_size=16)
    assert "encoder_embeddings.HLS.proj.weight" in model.load_report.expected_missing
    assert model.encoder_embeddings["HLS"].proj.weight.shape == (192, 6 * 256)
    with torch.no_grad():
        out = model({"S2L2A": torch.randn(1, 12, 32, 32), "HLS": torch.randn(1, 6, 32, 32)})
    assert out[0].shape == (1, 4, 192)
    assert tiny([], in_chans=3).modalities == ["image"]


# ---- errors -------------------------------------------------------------------------------------------------


def test_errors_name_the_valid_choices(tmp_path):
    with pytest.raises(ConfigError, match="unknown modality 'SAR'.*Valid modalities:.*S1GRD"):
        tiny(["SAR"])
    with pytest.raises(ConfigError, match="Did you mean 'merge_method'.*Accepted:.*modalities"):
        BACKBONE_REGISTRY.build("terramind_v1_tiny", modalities=["S2L2A"], merge_mehtod="mean")
    with pytest.raises(ConfigError, match="valid: mean, max, concat, dict, None"):
        tiny(["S2L2A"], merge_method="sum")
    with pytest.raises(ModalityError, match="both use the embedding 'untok_sen2l2a@224'"):
        tiny(["S2L2A", "s2l2a"])
    with pytest.raises(ModalityError, match="bands apply to pretrained pixel modalities"):
        tiny(["LULC"], bands={"LULC": ["water"]})
    model = tiny(["S2L2A"])
    with pytest.warns(UserWarning, match="'DEM' is not a modality of this backbone and is ignored"), \
            pytest.raises(ModalityError, match="ignored 'DEM'.*configured modalities: S2L2A"):
        model({"DEM": torch.randn(1, 1, 32, 32)})
    with pytest.warns(UserWarning, match="'unknown' is not a modality"):  # TerraTorch's own tests pass unknown=...
        features = model({"S2L2A": torch.randn(1, 12, 32, 32)}, unknown="Test")
    assert features[-1].shape == (1, 4, 192)
    with pytest.raises(ModalityError, match=r"expected 12 channels \(COASTAL_AEROSOL.*got 13"):
        model(torch.randn(1, 13, 32, 32))
    two = tiny(["S2L2A", "S1GRD"], merge_method="mean")
    with pytest.raises(ModalityError, match="same height and width"):
        two({"S2L2A": torch.randn(1, 12, 32, 32), "S1GRD": torch.randn(1, 2, 64, 64)})
    small_like = {"encoder.0.attn.qkv.weight": torch.zeros(1152, 384)}
    small_like.update({f"encoder.{i}.norm1.weight": torch.zeros(384) for i in range(12)})
    torch.save(small_like, tmp_path / "small.pt")
    with pytest.raises(CheckpointError, match="Use backbone terramind_v1_small"):
        tiny(["S2L2A"], ckpt_path=str(tmp_path / "small.pt"))


def test_activation_checkpointing_same_gradients_far_less_saved():
    """backbone_activation_checkpointing: identical outputs and gradients (stochastic depth included: the recompute
    replays the RNG), and the forward keeps a fraction of the bytes for backward (counted by autograd's hooks)."""
    from terramind_ft.registry import BACKBONE_REGISTRY

    def run(checkpointing: bool):
        torch.manual_seed(0)
        model = BACKBONE_REGISTRY.build("terramind_v1_tiny", modalities=["S2L2A", "S1GRD"], drop_path_rate=0.2,
                                        activation_checkpointing=checkpointing).train()
        x = {"S2L2A": torch.randn(2, 12, 64, 64, generator=torch.Generator().manual_seed(1)),
             "S1GRD": torch.randn(2, 2, 64, 64, generator=torch.Generator().manual_seed(2))}
        saved = []

        def pack(t):
            saved.append(t.numel() * t.element_size())
            return t

        torch.manual_seed(3)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = model(x)
        loss = sum(o.square().mean() for o in out)
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        return out[-1].detach(), grads, sum(saved)

    plain_out, plain_grads, plain_saved = run(False)
    ckpt_out, ckpt_grads, ckpt_saved = run(True)
    torch.testing.assert_close(ckpt_out, plain_out)
    assert plain_grads.keys() == ckpt_grads.keys()
    for name, grad in plain_grads.items():
        torch.testing.assert_close(ckpt_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)
    assert ckpt_saved < plain_saved / 4
