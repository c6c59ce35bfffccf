"""TiM backbones (issue 5): reference parity (case f), determinism, frozen generator, sharing, cache, errors."""

from __future__ import annotations

import json

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from terramind_ft.errors import ConfigError
from terramind_ft.models.terramind.tim import TerraMindTiM
from terramind_ft.registry import BACKBONE_REGISTRY

GOLDEN = "golden_TerraMind_v1_tiny_subset.pt"


@pytest.fixture(scope="module")
def case_f(terramind_ref):
    f = load_file(terramind_ref / "case_f.safetensors")
    a = load_file(terramind_ref / "case_a.safetensors")
    inputs = {"S2L2A": a["input.S2L2A"], "S1GRD": a["input.S1GRD"]}  # case order: S2L2A then S1GRD
    return inputs, f


@pytest.fixture(scope="module")
def golden_tim(terramind_ref):
    model = BACKBONE_REGISTRY.build("terramind_v1_tiny_tim", modalities=["S2L2A", "S1GRD"], tim_modalities=["LULC"],
                                    ckpt_path=str(terramind_ref / GOLDEN))
    return model.eval()


def small_tim(**kwargs) -> TerraMindTiM:
    torch.manual_seed(0)
    kwargs.setdefault("modalities", ["S2L2A", "S1GRD"])
    return BACKBONE_REGISTRY.build("terramind_v1_tiny_tim", img_size=64, **kwargs)


def small_inputs(batch: int = 2, seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"S2L2A": torch.randn(batch, 12, 64, 64, generator=g), "S1GRD": torch.randn(batch, 2, 64, 64, generator=g)}


# ---- parity with the reference (case f) ----------------------------------------------------------------------


def test_case_f_greedy_tokens_logits_and_outputs(golden_tim, case_f):
    inputs, ref = case_f
    with torch.no_grad():
        tokens = golden_tim.generate_tokens(inputs)["LULC"]
        generator = golden_tim.sampler.model
        logits = generator({"untok_sen2l2a@224": inputs["S2L2A"], "untok_sen1grd@224": inputs["S1GRD"]},
                           "tok_lulc@224")
        out = golden_tim({**inputs, "LULC": tokens})  # = golden_tim(inputs), without generating twice
    assert torch.equal(tokens.reshape(2, -1), ref["greedy.tokens"])
    torch.testing.assert_close(logits[:, :4], ref["greedy.logits_pos000_003"], atol=1e-4, rtol=0)
    torch.testing.assert_close(logits.amax(-1), ref["greedy.logits_max"], atol=1e-4, rtol=0)
    torch.testing.assert_close(logits.logsumexp(-1), ref["greedy.logits_logsumexp"], atol=1e-4, rtol=0)
    top5 = logits.topk(5, dim=-1)
    torch.testing.assert_close(top5.values, ref["greedy.logits_top5_values"], atol=1e-4, rtol=0)
    assert torch.equal(top5.indices, ref["greedy.logits_top5_indices"])
    assert len(out) == 12 and out[0].shape == (2, 196, 192)
    torch.testing.assert_close(out[0], ref["greedy.output.layer00"], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out[-1], ref["greedy.output.layer11"], atol=1e-4, rtol=1e-4)
    assert out.modalities == ["S2L2A", "S1GRD", "LULC"]


def test_case_f_sampled_outputs_from_stored_tokens(golden_tim, case_f):
    inputs, ref = case_f
    given = {**inputs, "LULC": ref["sampled.tokens"].reshape(2, 14, 14)}
    with torch.no_grad():
        out = golden_tim(given)
    torch.testing.assert_close(out[0], ref["sampled.output.layer00"], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out[-1], ref["sampled.output.layer11"], atol=1e-4, rtol=1e-4)


def test_checkpoint_key_feeds_encoder_and_generator(golden_tim, terramind_ref):
    golden = torch.load(terramind_ref / GOLDEN, map_location="cpu", weights_only=True)
    state = golden_tim.state_dict()
    for key in ("encoder.3.attn.qkv.weight", "encoder_norm.weight", "encoder_embeddings.untok_sen1grd@224.proj.weight"):
        assert torch.equal(state[key], golden[key])
        assert torch.equal(state[f"sampler.model.{key}"], golden[key])
    assert torch.equal(state["encoder_embeddings.tok_lulc@224.token_emb.weight"],
                       golden["encoder_embeddings.tok_lulc@224.token_emb.weight"])
    for key in ("decoder.1.cross_attn.kv.weight", "mask_token", "decoder_proj_context.bias",
                "decoder_embeddings.tok_lulc@224.to_logits.weight"):
        assert torch.equal(state[f"sampler.model.{key}"], golden[key])
    # The generator holds only what it uses: the two inputs' embeddings and the LULC decoder embedding.
    assert list(golden_tim.sampler.model.encoder_embeddings) == ["untok_sen2l2a@224", "untok_sen1grd@224"]
    assert list(golden_tim.sampler.model.decoder_embeddings) == ["tok_lulc@224"]


# ---- determinism, RNG, gradients, inputs -------------------------------------------------------------------


def test_eval_is_greedy_and_deterministic(golden_tim, case_f):
    inputs, ref = case_f
    assert not golden_tim.training
    with torch.no_grad():
        first, second = golden_tim.generate_tokens(inputs)["LULC"], golden_tim.generate_tokens(inputs)["LULC"]
    assert torch.equal(first, second) and torch.equal(first.reshape(2, -1), ref["greedy.tokens"])


def test_training_samples_with_its_own_seeded_generator():
    model, twin = small_tim(tim_seed=7), small_tim(tim_seed=7)
    inputs = small_inputs()
    with torch.no_grad():
        greedy = model.eval().generate_tokens(inputs)["LULC"]
        model.train()
        rng_before = torch.get_rng_state()
        draw1, draw2 = model.generate_tokens(inputs)["LULC"], model.generate_tokens(inputs)["LULC"]
        assert torch.equal(torch.get_rng_state(), rng_before), "TiM sampling must not touch the global RNG"
        assert not torch.equal(draw1, greedy), "training samples (temperature 1, top-p 0.8), not argmax"
        assert not torch.equal(draw1, draw2), "the sampling generator advances between steps"
        assert torch.equal(twin.train().generate_tokens(inputs)["LULC"], draw1), "same tim_seed, same draws"

        model.eval()
        model.tim_eval_sampling = True  # opt-in sampling at evaluation: seeded per call, so repeatable
        eval_draw1, eval_draw2 = model.generate_tokens(inputs)["LULC"], model.generate_tokens(inputs)["LULC"]
    assert torch.equal(eval_draw1, eval_draw2) and not torch.equal(eval_draw1, greedy)


def test_no_gradient_reaches_generator_and_encoder_trains():
    model = small_tim(tim_seed=0).train()
    out = model(small_inputs())
    out[-1].square().mean().backward()
    generator_params = list(model.sampler.parameters())
    assert generator_params and all(not p.requires_grad and p.grad is None for p in generator_params)
    for name, param in model.named_parameters():
        if name.startswith("sampler."):
            continue
        if name == "encoder_embeddings.tok_lulc@224.token_emb.weight" or name.startswith("encoder"):
            assert param.requires_grad, name
    assert model.encoder[0].attn.qkv.weight.grad.abs().sum() > 0
    assert model.encoder_embeddings["untok_sen2l2a@224"].proj.weight.grad.abs().sum() > 0
    assert model.encoder_embeddings["tok_lulc@224"].token_emb.weight.grad.abs().sum() > 0
    assert not model.sampler.training, "the generator stays in eval mode"


def test_input_dict_is_not_modified():
    model = small_tim().eval()
    inputs = small_inputs()
    snapshot = {k: v.clone() for k, v in inputs.items()}
    tensors = dict(inputs)
    with torch.no_grad():
        model(inputs)
    assert list(inputs) == ["S2L2A", "S1GRD"]
    assert all(inputs[k] is tensors[k] and torch.equal(inputs[k], snapshot[k]) for k in inputs)


def test_output_contract_non_multiple_size_and_concat():
    model = small_tim(merge_method="concat").eval()
    inputs = {k: v[..., :60, :50] for k, v in small_inputs().items()}
    with torch.no_grad():
        out = model(inputs)
    assert out.grid == (4, 4) and out.image_size == (60, 50)
    assert out[-1].shape == (2, 16, 3 * 192) and model.out_channels == [3 * 192] * 12


# ---- cost: sharing and caching ------------------------------------------------------------------------------


def test_frozen_encoder_is_shared_with_generator_and_unshared_when_trained():
    model = small_tim(tim_seed=0)
    reference = small_tim(tim_seed=0, share_frozen_weights=False)
    pretrained_qkv = model.sampler.model.encoder[0].attn.qkv.weight.detach().clone()
    inputs = small_inputs()
    for name, param in model.named_parameters():
        param.requires_grad_(False)
    for param in reference.parameters():
        param.requires_grad_(False)
    model.eval(), reference.eval()
    with torch.no_grad():
        out, ref_out = model(inputs), reference(inputs)
    encoder_numel = sum(p.numel() for p in model.encoder.parameters()) + model.encoder_norm.weight.numel()
    embedding_numel = sum(p.numel() for k in ("untok_sen2l2a@224", "untok_sen1grd@224")
                          for p in model.encoder_embeddings[k].parameters())
    assert model.shared_parameter_count() == encoder_numel + embedding_numel
    assert model.sampler.model.encoder[0].attn.qkv.weight is model.encoder[0].attn.qkv.weight
    assert reference.shared_parameter_count() == 0
    torch.testing.assert_close(out[-1], ref_out[-1], atol=0, rtol=0)
    assert len(model.state_dict()) == len(reference.state_dict())

    # Unfreeze and train: the generator gets its own copy back and keeps the pretrained values.
    for name, param in model.named_parameters():
        param.requires_grad_(not name.startswith("sampler."))
    model.train()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.0)
    model(inputs)[-1].square().mean().backward()
    optimizer.step()
    assert model.shared_parameter_count() == 0
    assert not torch.equal(model.encoder[0].attn.qkv.weight, pretrained_qkv)
    assert torch.equal(model.sampler.model.encoder[0].attn.qkv.weight, pretrained_qkv)
    assert not model.sampler.model.encoder[0].attn.qkv.weight.requires_grad


def test_loading_a_state_dict_never_writes_through_shared_weights(tmp_path):
    model = small_tim()
    model.requires_grad_(False)
    model.eval()
    with torch.no_grad():
        model(small_inputs())
    assert model.shared_parameter_count() > 0
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["encoder.0.attn.qkv.weight"] += 1.0  # a fine-tuned encoder, generator still pretrained
    model.load_state_dict(state)
    assert torch.equal(model.encoder[0].attn.qkv.weight, state["encoder.0.attn.qkv.weight"])
    assert torch.equal(model.sampler.model.encoder[0].attn.qkv.weight, state["sampler.model.encoder.0.attn.qkv.weight"])
    # A saved TiM (with sampler.model.* keys) loads through ckpt_path with the same separation.
    path = tmp_path / "tim.pt"
    torch.save(state, path)
    reloaded = small_tim(ckpt_path=str(path))
    assert torch.equal(reloaded.encoder[0].attn.qkv.weight, state["encoder.0.attn.qkv.weight"])
    assert torch.equal(reloaded.sampler.model.encoder[0].attn.qkv.weight,
                       state["sampler.model.encoder.0.attn.qkv.weight"])


def test_token_cache_in_memory_and_on_disk(tmp_path, monkeypatch):
    calls = []
    model = small_tim(tim_cache=str(tmp_path / "cache")).eval()
    original = model.sampler.model.encode_masked

    def counting_encode(pieces):
        calls.append(pieces[0][1].shape[0])
        return original(pieces)

    monkeypatch.setattr(model.sampler.model, "encode_masked", counting_encode)
    inputs = small_inputs(batch=3)
    with torch.no_grad():
        first = model.generate_tokens(inputs)["LULC"]
        again = model.generate_tokens(inputs)["LULC"]
        out_cached = model(inputs)
    assert calls == [3] and torch.equal(first, again)
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 3
    # A batch with one new sample generates only that sample.
    mixed = {k: torch.cat([v[:2], v[:1] + 1.0]) for k, v in inputs.items()}
    with torch.no_grad():
        tokens = model.generate_tokens(mixed)["LULC"]
    assert calls == [3, 1] and torch.equal(tokens[:2], first[:2])

    # A fresh model reads the files; keys can be file names instead of content hashes.
    fresh = small_tim(tim_cache=str(tmp_path / "cache")).eval()
    monkeypatch.setattr(fresh.sampler.model, "encode_masked", counting_encode)
    with torch.no_grad():
        assert torch.equal(fresh.generate_tokens(inputs)["LULC"], first)
        torch.testing.assert_close(fresh(inputs)[-1], out_cached[-1], atol=0, rtol=0)
        fresh.generate_tokens(inputs, cache_keys=["a.tif", "b.tif", "c.tif"])
        fresh.generate_tokens({k: v * 0 for k, v in inputs.items()}, cache_keys=["a.tif", "b.tif", "c.tif"])
    assert calls == [3, 1, 3], "name-keyed entries are reused whatever the content"


# ---- multi-step, chained, any token modality ----------------------------------------------------------------


def test_multi_step_chained_generation_of_several_token_modalities():
    model = small_tim(modalities=["S2L2A"], tim_modalities=["NDVI", "S1GRD", "DEM"], tim_decoding_steps=3,
                      tim_seed=3).train()
    assert list(model.sampler.model.encoder_embeddings) == [
        "untok_sen2l2a@224", "tok_ndvi@224", "tok_sen1grd@224", "tok_dem@224"]
    inputs = {"S2L2A": small_inputs()["S2L2A"]}
    with torch.no_grad():
        tokens = model.generate_tokens(inputs)
        out = model(inputs)
    assert list(tokens) == ["NDVI", "tok_sen1grd@224", "tok_dem@224"]
    for ids in tokens.values():
        assert ids.shape == (2, 4, 4) and int(ids.min()) >= 0 and int(ids.max()) < 15360
    assert out.modalities == ["S2L2A", "NDVI", "tok_sen1grd@224", "tok_dem@224"]
    assert out[-1].shape == (2, 16, 192)


def test_coords_as_a_tim_modality(tmp_path):
    """TiM generates a location ("lat lon [EOS]", autoregressively), feeds it to the encoder as a coords input
    and conditions the next TiM modality on it; the constructed generator gives the known answer."""
    pytest.importorskip("tokenizers")
    from tokenizers import Tokenizer

    from coords_vocab import point_coords_decoder_at, write_coords_vocab

    vocab = Tokenizer.from_file(str(write_coords_vocab(tmp_path / "config.json"))).get_vocab()
    torch.manual_seed(0)
    model = BACKBONE_REGISTRY.build("terramind_v1_tiny_tim", modalities=["S2L2A"], tim_modalities=["coords", "LULC"])
    assert "coords" in model.sampler.model.encoder_embeddings  # chained: LULC is generated knowing the location
    answer = [vocab["lat=40.00"], vocab["lon=-3.50"], 3]
    point_coords_decoder_at(model.sampler.model, answer)
    model.eval()
    x = torch.randn(2, 12, 32, 32)
    with torch.no_grad():
        tokens = model.generate_tokens({"S2L2A": x})
        out = model({"S2L2A": x})
        given = model({"S2L2A": x, "coords": torch.tensor([answer + [0]] * 2)})
        elsewhere = model({"S2L2A": x, "coords": torch.tensor([[vocab["lat=-33.75"], vocab["lon=151.25"], 3, 0]] * 2)})
    assert tokens["coords"].tolist() == [answer + [0]] * 2 and tokens["LULC"].shape == (2, 2, 2)
    assert out.modalities == ["S2L2A", "coords", "LULC"] and out[-1].shape == (2, 4, 192)  # coords: not merged
    torch.testing.assert_close(out[-1], given[-1])  # the generated location is what the encoder saw
    assert not torch.allclose(out[-1], elsewhere[-1])  # ... and it matters
    model.train()
    model({"S2L2A": x})[-1].sum().backward()
    assert model.encoder_embeddings["coords"].token_emb.weight.grad is not None
    assert all(p.grad is None for p in model.sampler.parameters())


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"bands": {"S2L2A": ["RED", "GREEN", "BLUE"]}}, "band subsets.*terramind_v1_tiny \\(no TiM\\)"),
    ({"modalities": ["S2L2A", {"HLS": 6}]}, "new modality 'HLS'.*terramind_v1_tiny"),
    ({"modalities": ["S2L2A", "LULC"]}, "also the input 'LULC'"),
    ({"modalities": ["S2L2A"], "tim_modalities": ["S2L2A"]}, "also the input 'S2L2A'"),
    ({"tim_modalities": ["CROPS", "NDVI"]}, "unknown output modality .CROPS.*LULC"),
    ({"tim_modalities": []}, "tim_modalities is empty"),
])
def test_build_errors_name_the_problem_and_the_alternative(kwargs, match):
    kwargs = {"modalities": ["S2L2A", "S1GRD"], **kwargs}
    with pytest.raises(ConfigError, match=match):  # ModalityError / UnknownNameError are ConfigErrors
        BACKBONE_REGISTRY.build("terramind_v1_tiny_tim", **kwargs)


def test_registry_names():
    for size in ("tiny", "small", "base", "large"):
        assert f"terramind_v1_{size}_tim" in BACKBONE_REGISTRY
    with pytest.raises(ValueError, match="tim_seeds.*Did you mean 'tim_seed'"):
        BACKBONE_REGISTRY.build("terramind_v1_tiny_tim", modalities=["S2L2A"], tim_seeds=1)


# ---- the fine-tuning config ---------------------------------------------------------------------------------


def test_sen1floods11_tim_config_trains_a_few_steps(tmp_path):
    """configs/sen1floods11_tim.yaml, pointed at generated data and the tiny TiM, fits through the real CLI."""
    import yaml
    from cli_configs import FAST_TRAINER, write

    from terramind_ft.cli import main
    from terramind_ft.data.synthetic import make_sen1floods11

    config = yaml.safe_load((Path(__file__).resolve().parents[2] / "configs" / "sen1floods11_tim.yaml").read_text())
    dataset = make_sen1floods11(tmp_path / "data", size=64, splits={"train": 4, "val": 2, "test": 2})
    config["data"]["init_args"] = {**dataset.datamodule_kwargs(), "batch_size": 2, "num_workers": 0}
    config["trainer"] = {**FAST_TRAINER, "default_root_dir": str(tmp_path / "run")}
    args = config["model"]["init_args"]["model_args"]
    assert args["backbone"].endswith("_tim") and args["backbone_tim_modalities"] == ["LULC"]
    args.update(backbone="terramind_v1_tiny_tim", backbone_pretrained=False, decoder_channels=[32, 16, 16, 8],
                backbone_tim_seed=0)
    assert main(["fit", "--config", write(config, tmp_path / "tim.yaml")]) == 0
    checkpoint = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    keys = checkpoint["state_dict"]
    assert any(".sampler.model.decoder.0." in k for k in keys) and any(k.endswith("encoder.0.attn.qkv.weight")
                                                                         for k in keys)

    # ... and `test` evaluates the checkpoint with greedy (deterministic) TiM tokens, writing metrics.json.
    config_path = write(config, tmp_path / "tim.yaml")
    assert main(["test", "--config", config_path, "--ckpt_path", "last"]) == 0
    metrics = json.loads((tmp_path / "run" / "checkpoints" / "metrics.json").read_text())
    assert 0.0 <= metrics["metrics"]["test/mIoU"] <= 1.0
