"""Token sampling (ROAR, top-k/top-p/temperature) and any-to-any generation (issue 7 item 3).

Generation tests use the tiny TerraMind and the real tokenizer classes with random weights, on 32-px images
with one diffusion step: shapes, units, probabilities, seeding and conditioning are checked, not image quality.
"""

from __future__ import annotations

import gc

import pytest
import torch

from terramind_ft.errors import ConfigError, ModalityError
from terramind_ft.modalities import MODALITIES
from terramind_ft.models.terramind.decoder import TerraMind
from terramind_ft.models.terramind.generation import TerraMindGeneration, lulc_class_map
from terramind_ft.models.terramind.sampling import (
    SamplingSettings,
    TokenTarget,
    filter_top_k,
    filter_top_p,
    linear_token_schedule,
    roar_decode,
    sample_tokens,
)
from terramind_ft.registry import FULL_MODEL_REGISTRY

pytestmark = pytest.mark.filterwarnings("ignore:.*random weights:UserWarning")


# ---- sampling ------------------------------------------------------------------------------------------------


def test_top_p_keeps_the_token_that_crosses_the_threshold_and_top_k_the_k_best():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    logits = probs.log()
    kept = torch.isfinite(filter_top_p(logits, 0.7))
    assert kept.tolist() == [[True, True, False, False]]  # 0.5 < 0.7, 0.5 + 0.3 crosses it: both kept
    assert torch.isfinite(filter_top_p(logits, 0.4)).tolist() == [[True, False, False, False]]
    assert torch.isfinite(filter_top_p(logits, 0.0)).all()  # 0 is "off" in the reference, not "keep one"
    assert torch.isfinite(filter_top_p(logits, 1e-6)).sum() == 1  # the top token always stays
    assert torch.equal(filter_top_p(logits, 1.0), logits)
    shuffled = logits[:, [2, 0, 3, 1]]  # the filter works on positions, not on sorted input
    assert torch.isfinite(filter_top_p(shuffled, 0.7)).tolist() == [[False, True, False, True]]
    assert torch.isfinite(filter_top_k(logits, 2)).tolist() == [[True, True, False, False]]
    assert torch.equal(filter_top_k(logits, 0), logits)


def test_sample_tokens_greedy_tempered_and_filtered():
    logits = torch.randn(64, 50)
    assert torch.equal(sample_tokens(logits, SamplingSettings(temperature=0.0)), logits.argmax(-1))
    g = torch.Generator().manual_seed(0)
    draws = torch.stack([sample_tokens(logits, SamplingSettings(temperature=1.0, top_p=1.0, top_k=3), g)
                         for _ in range(20)])
    top3 = logits.topk(3, dim=-1).indices
    assert (draws[..., None] == top3).any(-1).all(), "top-k 3: only the three best tokens are drawn"
    # Top-p is computed on the un-tempered logits: a high temperature widens the draw within the nucleus only.
    nucleus = torch.isfinite(filter_top_p(logits, 0.5))
    hot = torch.stack([sample_tokens(logits, SamplingSettings(temperature=50.0, top_p=0.5), g) for _ in range(20)])
    assert nucleus.gather(1, hot.T).all()
    a = sample_tokens(logits, SamplingSettings(), torch.Generator().manual_seed(5))
    b = sample_tokens(logits, SamplingSettings(), torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    with pytest.raises(ConfigError, match="decoding_steps"):
        SamplingSettings(decoding_steps=0)


def test_linear_token_schedule():
    assert linear_token_schedule(196, 1) == [196]
    assert linear_token_schedule(196, 3) == [66, 65, 65]
    assert linear_token_schedule(4, 8) == [1, 1, 1, 1]
    assert sum(linear_token_schedule(1000, 7)) == 1000


def test_multi_step_roar_decodes_every_position_once_and_sees_earlier_steps():
    torch.manual_seed(0)
    model = TerraMind("tiny", encoder_keys=["untok_sen1grd@224", "tok_dem@224"], decoder_keys=["tok_dem@224"],
                      img_size=64).eval()
    seen_visible = []
    original = model.encode_masked

    def spy(pieces):
        assert pieces[0][0] == "untok_sen1grd@224" and pieces[0][2] is None  # the input, fully visible
        seen_visible.append([(key, int(vis.numel())) for key, _, vis in pieces[1:]])
        return original(pieces)

    model.encode_masked = spy
    target = TokenTarget.empty("tok_dem@224", (4, 4), 2, torch.device("cpu"))
    with torch.no_grad():
        roar_decode(model, [("untok_sen1grd@224", torch.randn(2, 2, 64, 64))], target,
                    SamplingSettings(decoding_steps=3), torch.Generator().manual_seed(0))
    assert target.complete and int(target.ids.max()) < 15360
    # 3 steps of 6, 5, 5 tokens; from the second step on the encoder also sees the 6, then 11 decoded tokens.
    assert seen_visible == [[], [("tok_dem@224", 6)], [("tok_dem@224", 11)]]


# ---- generation ----------------------------------------------------------------------------------------------


def s2_input(batch: int = 1, size: int = 32, seed: int = 0) -> torch.Tensor:
    """Raw Sentinel-2 L2A digital numbers around the pretraining mean."""
    g = torch.Generator().manual_seed(seed)
    mean = torch.tensor(MODALITIES["S2L2A"].mean).view(1, -1, 1, 1)
    return (mean + 800 * torch.randn(batch, 12, size, size, generator=g)).clamp(min=0)


@pytest.mark.slow  # builds one 286M-parameter DiVAE per output
@pytest.mark.parametrize("output", ["S2L2A", "S1GRD", "S1RTC", "NDVI"])
def test_generate_each_diffusion_output_from_s2l2a(output):
    torch.manual_seed(0)
    model = FULL_MODEL_REGISTRY.build("terramind_v1_tiny_generate", modalities=["S2L2A"], output_modalities=[output],
                                      standardize=True, timesteps=1)
    modality = MODALITIES[output]
    out = model({"S2L2A": s2_input(size=30)}, seed=1)  # 30 px: padded to 32 inside, cropped back
    assert list(out) == [output]
    values = out[output]
    assert values.shape == (1, modality.num_bands, 30, 30) and values.dtype == torch.float32
    mean, std = torch.tensor(modality.mean).view(1, -1, 1, 1), torch.tensor(modality.std).view(1, -1, 1, 1)
    standardized = (values - mean) / std
    # Diffusion outputs are clipped to [-1, 1] in standardised units, returned in physical units.
    assert standardized.min() >= -1 - 1e-4 and standardized.max() <= 1 + 1e-4 and standardized.std() > 0
    assert isinstance(model.tokenizer[modality.token_key], torch.nn.Module)
    del model
    gc.collect()


@pytest.fixture(scope="module")
def dem_lulc_model():
    torch.manual_seed(0)
    model = FULL_MODEL_REGISTRY.build("terramind_v1_tiny_generate", modalities=["S2L2A"],
                                      output_modalities=["DEM", "LULC"], standardize=True, timesteps=1)
    yield model
    del model
    gc.collect()


def test_generate_dem_and_lulc_probabilities_and_seeded_determinism(dem_lulc_model):
    x = {"S2L2A": s2_input(batch=2)}
    before = x["S2L2A"].clone()
    out = dem_lulc_model(x, seed=7)
    again = dem_lulc_model(x, seed=7)
    other = dem_lulc_model(x, seed=8)
    assert torch.equal(x["S2L2A"], before) and list(x) == ["S2L2A"]
    assert out["DEM"].shape == (2, 1, 32, 32) and out["LULC"].shape == (2, 10, 32, 32)
    torch.testing.assert_close(out["LULC"].sum(1), torch.ones(2, 32, 32))
    assert lulc_class_map(out["LULC"]).shape == (2, 32, 32) and lulc_class_map(out["LULC"]).max() < 10
    dem = out["DEM"]
    assert dem.min() >= 670.665 - 951.272 - 1e-2 and dem.max() <= 670.665 + 951.272 + 1e-2
    for name in out:
        assert torch.equal(out[name], again[name]), f"{name}: the same seed must reproduce exactly"
        assert not torch.equal(out[name], other[name]), f"{name}: another seed draws other tokens / noise"
    rng = torch.get_rng_state()
    dem_lulc_model(x, seed=7, output_modalities=["LULC"])
    assert torch.equal(torch.get_rng_state(), rng), "a seeded call leaves the global RNG alone"


def test_standardization_chaining_and_token_inputs(dem_lulc_model, monkeypatch):
    model = dem_lulc_model
    calls = []
    original = model.sampler.model.encode_masked
    monkeypatch.setattr(model.sampler.model, "encode_masked",
                        lambda pieces: calls.append(pieces) or original(pieces))
    x = s2_input()
    stats_before = (MODALITIES["S2L2A"].mean, MODALITIES["S2L2A"].std)
    tokens = model.generate_tokens({"S2L2A": x}, seed=0)
    assert list(tokens) == ["DEM", "LULC"] and tokens["DEM"].shape == (1, 2, 2)
    # The encoder got standardised pixels; LULC (second) was conditioned on the DEM tokens (chained).
    mean, std = torch.tensor(stats_before[0]).view(1, -1, 1, 1), torch.tensor(stats_before[1]).view(1, -1, 1, 1)
    torch.testing.assert_close(calls[0][0][1], (x - mean) / std)
    assert [p[0] for p in calls[0]] == ["untok_sen2l2a@224"]
    assert [p[0] for p in calls[1]] == ["untok_sen2l2a@224", "tok_dem@224"]
    assert torch.equal(calls[1][1][1].reshape(1, -1), tokens["DEM"].reshape(1, -1))
    assert (MODALITIES["S2L2A"].mean, MODALITIES["S2L2A"].std) == stats_before

    # Greedy decoding (temperature 0) is seed-independent.
    model.sampling = SamplingSettings(temperature=0.0)
    try:
        assert all(torch.equal(a, b) for a, b in zip(model.generate_tokens({"S2L2A": x}, seed=1).values(),
                                                      model.generate_tokens({"S2L2A": x}, seed=2).values()))
    finally:
        model.sampling = SamplingSettings()


def test_inputs_as_token_ids_and_lulc_class_maps(dem_lulc_model):
    """A LULC class map (tokenised by the LULC tokenizer) or LULC token ids can condition generation."""
    model = FULL_MODEL_REGISTRY.build("terramind_v1_tiny_generate", modalities=["LULC"], output_modalities=["DEM"],
                                      tokenizers={"LULC": dem_lulc_model.tokenizer["tok_lulc@224"],
                                                  "DEM": dem_lulc_model.tokenizer["tok_dem@224"]},
                                      standardize=True, timesteps=1)
    class_map = torch.randint(0, 10, (1, 32, 32))
    from_map = model.generate_tokens({"LULC": class_map}, seed=0)["DEM"]
    ids = dem_lulc_model.tokenizer["tok_lulc@224"].encode_tokens(class_map)
    from_ids = model.generate_tokens({"tok_lulc@224": ids}, seed=0)["DEM"]  # ids go under the token key
    assert torch.equal(from_map, from_ids)
    assert model({"LULC": class_map}, seed=0)["DEM"].shape == (1, 1, 32, 32)


def test_build_errors():
    with pytest.raises(ConfigError, match="unknown output modality 'CROPS'"):
        TerraMindGeneration(["S2L2A"], ["CROPS"], size="tiny", tokenizers={})
    with pytest.raises(ConfigError, match="listed twice"):
        TerraMindGeneration(["S2L2A"], ["DEM", "dem"], size="tiny")
    for size in ("tiny", "small", "base", "large"):
        assert f"terramind_v1_{size}_generate" in FULL_MODEL_REGISTRY


def test_greedy_generation_reproduces_the_reference_generator_and_multi_step_works(terramind_ref, dem_lulc_model):
    """The generator of TiM case f, used for generation at temperature 0, gives the reference's greedy tokens."""
    from safetensors.torch import load_file

    a, f = load_file(terramind_ref / "case_a.safetensors"), load_file(terramind_ref / "case_f.safetensors")
    inputs = {"S2L2A": a["input.S2L2A"], "S1GRD": a["input.S1GRD"]}  # already standardised
    lulc_tokenizer = {"LULC": dem_lulc_model.tokenizer["tok_lulc@224"]}
    golden = str(terramind_ref / "golden_TerraMind_v1_tiny_subset.pt")
    greedy = TerraMindGeneration(["S2L2A", "S1GRD"], ["LULC"], size="tiny", ckpt_path=golden, temps=0.0,
                                 tokenizers=lulc_tokenizer)
    tokens = greedy.generate_tokens(inputs, seed=123)["LULC"]
    assert torch.equal(tokens.reshape(2, -1), f["greedy.tokens"])

    stepped = TerraMindGeneration(["S2L2A", "S1GRD"], ["LULC"], size="tiny", ckpt_path=golden, decoding_steps=4,
                                  tokenizers=lulc_tokenizer)
    assert "tok_lulc@224" in stepped.sampler.model.encoder_embeddings  # decoded tokens feed later steps
    first, again = stepped.generate_tokens(inputs, seed=5)["LULC"], stepped.generate_tokens(inputs, seed=5)["LULC"]
    assert torch.equal(first, again) and first.shape == (2, 14, 14) and int(first.max()) < 4375


def test_raw_coordinates_are_tokenised_never_cast_to_token_ids(tmp_path):
    model = TerraMindGeneration(["S2L2A", "coords"], ["LULC"], size="tiny", pretrained=False,
                                tokenizer_kwargs={"LULC": {"pretrained": False}}, timesteps=1).eval()
    image = torch.randn(1, 12, 32, 32)
    with pytest.raises(ConfigError, match="coords need the reference's vocabulary"):
        model({"S2L2A": image, "coords": torch.tensor([[12.3, 45.6]])})  # once behaved as ids [12, 45]
    with pytest.raises(ModalityError, match=r"token ids must lie in \[0, 30000\)"):
        model({"S2L2A": image, "coords": torch.tensor([[-3, 5]])})  # crashed with IndexError
    with torch.no_grad():
        out = model({"S2L2A": image, "coords": torch.tensor([[12, 45]])})
    assert "LULC" in out
    pytest.importorskip("tokenizers")
    from coords_vocab import write_coords_vocab

    vocab = write_coords_vocab(tmp_path / "config.json")
    with_vocab = TerraMindGeneration(["S2L2A", "coords"], ["LULC"], size="tiny", pretrained=False, timesteps=1,
                                     tokenizer_kwargs={"LULC": {"pretrained": False},
                                                       "coords": {"tokenizer_file": str(vocab)}}).eval()
    with_vocab.load_state_dict(model.state_dict())
    with torch.no_grad():
        raw = with_vocab.generate_tokens({"S2L2A": image, "coords": torch.tensor([[12.3, 45.6]])}, seed=1)["LULC"]
        ids = with_vocab._tokenize_coords(torch.tensor([[12.3, 45.6]]))
        as_ids = with_vocab.generate_tokens({"S2L2A": image, "coords": ids["tensor"]}, seed=1)["LULC"]
    assert torch.equal(raw, as_ids)  # raw (lon, lat) is exactly its token ids
