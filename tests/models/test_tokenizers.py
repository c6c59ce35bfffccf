"""The six TerraMind v1 tokenizers: official key layouts, strict checkpoint loading, encode/decode on real chips,
the DDIM schedule of the spec, and seeded decoding.

Random weights and 64 px crops throughout; the two real models (S1RTC DiVAE, LULC VQVAE) are built once per
module. Manifests of all six are checked on the meta device (no memory, no time).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
import torch.nn.functional as F
from rasterio.windows import Window

from terramind_ft import hub
from terramind_ft.errors import CheckpointError, ConfigError, DataError
from terramind_ft.modalities import MODALITIES, TOKEN_MODALITIES
from terramind_ft.models.tokenizers.diffusion import DDIMSchedule
from terramind_ft.models.tokenizers.tokenizer import (TOKENIZER_NAMES, DiVAE, TokenizerBackbone, VQVAE,
                                                      load_tokenizer_weights)
from terramind_ft.models.tokenizers.unet import PatchedDiffusionUNet
from terramind_ft.models.tokenizers.vit import grid_pos_emb_tokens, sincos_pos_grid
from terramind_ft.registry import BACKBONE_REGISTRY, FULL_MODEL_REGISTRY

CROP = 64  # px: a 4x4 token grid keeps the 290M-parameter DiVAE cheap on a CPU
DECODER_PREFIXES = ("decoder.", "post_quant_proj.")


def official_keys(terramind_ref: Path, modality: str) -> dict:
    suffix = TOKENIZER_NAMES[modality].rsplit("_", 1)[-1]
    return json.loads((terramind_ref / f"tokenizer_keys_{suffix}.json").read_text())


def read_chips(terramesh_dir: Path, modality: str, n: int = 2, size: int = CROP) -> torch.Tensor:
    """Top-left ``size`` crops of the first ``n`` chips; standardised with the catalogue (LULC: class ids)."""
    arrays = []
    for path in sorted((terramesh_dir / modality).glob("*.tif"))[:n]:
        with rasterio.open(path) as src:
            arrays.append(src.read(window=Window(0, 0, size, size)))
    data = np.stack(arrays)
    m = MODALITIES[modality]
    if m.is_categorical:
        return torch.from_numpy(data[:, 0].astype(np.int64))
    mean = np.asarray(m.mean, dtype=np.float64)[None, :, None, None]
    std = np.asarray(m.std, dtype=np.float64)[None, :, None, None]
    return torch.from_numpy(((data - mean) / std).astype(np.float32))


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """The UNet runs many small ops; on a CPU shared with other jobs, two OpenMP threads that wait for each other
    are 5-8x slower than one (measured). Restored after this module."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def divae() -> DiVAE:
    torch.manual_seed(0)
    return FULL_MODEL_REGISTRY.build("terramind_v1_tokenizer_s1rtc").eval()


@pytest.fixture(scope="module")
def lulc() -> VQVAE:
    torch.manual_seed(1)
    return FULL_MODEL_REGISTRY.build("terramind_v1_tokenizer_lulc").eval()


@pytest.fixture(scope="module")
def lulc_checkpoint(tmp_path_factory, terramind_ref) -> tuple[Path, dict[str, torch.Tensor]]:
    """A random LULC tokenizer file in the official layout (a flat dict saved with torch.save), written from the
    key list alone, not from our model. To keep the file at ~10 MB instead of 735 MB, every tensor is a view at
    its own offset into one shared random storage (torch.save stores a shared storage once)."""
    spec = official_keys(terramind_ref, "LULC")
    entries = spec["keys"]
    largest = max(int(np.prod(e["shape"])) for e in entries)
    pool = torch.randn(largest + len(entries), generator=torch.Generator().manual_seed(7)) * 0.02
    state = {e["key"]: pool[i: i + int(np.prod(e["shape"]))].view(e["shape"]) for i, e in enumerate(entries)}
    path = tmp_path_factory.mktemp("hf") / spec["hf_filename"]
    torch.save(state, path)
    assert path.stat().st_size < 50e6
    return path, state


# ----------------------------------------------------------------------------------------------- manifests


@pytest.mark.parametrize("modality", TOKEN_MODALITIES)
def test_state_dict_equals_official_key_file(terramind_ref, modality):
    spec = official_keys(terramind_ref, modality)
    with torch.device("meta"):
        model = FULL_MODEL_REGISTRY.build(TOKENIZER_NAMES[modality])
        backbone = BACKBONE_REGISTRY.build(TOKENIZER_NAMES[modality])
    state = model.state_dict()
    assert {k: list(v.shape) for k, v in state.items()} == {e["key"]: e["shape"] for e in spec["keys"]}
    assert len(state) == spec["num_keys"] == (310 if modality == "LULC" else 601)
    assert sum(p.numel() for p in model.parameters()) == spec["num_parameters"]
    assert type(model) is (VQVAE if modality == "LULC" else DiVAE)
    assert model.vocab_size == MODALITIES[modality].vocab_size
    assert not model.encoder.pos_emb.requires_grad
    # the encoder-only backbone holds exactly the file's non-decoder tensors
    assert set(backbone.state_dict()) == {e["key"] for e in spec["keys"] if not e["key"].startswith(DECODER_PREFIXES)}


def test_registry_entries_and_argument_checks():
    for name in TOKENIZER_NAMES.values():
        assert name in FULL_MODEL_REGISTRY and name in BACKBONE_REGISTRY
    with pytest.raises(ConfigError, match="timesteps"):
        FULL_MODEL_REGISTRY.build("terramind_v1_tokenizer_dem", timesteps=3)
    with pytest.raises(ConfigError, match="return_type"), torch.device("meta"):
        BACKBONE_REGISTRY.build("terramind_v1_tokenizer_dem", return_type="tokens")


# ----------------------------------------------------------------------------------------------- loading


def test_pretrained_loads_official_file_strictly(monkeypatch, lulc_checkpoint):
    path, state = lulc_checkpoint
    calls = []

    def fake_download(repo_id, filename, **kwargs):
        calls.append((repo_id, filename))
        return str(path)

    monkeypatch.setattr(hub, "hf_hub_download", fake_download)
    model = FULL_MODEL_REGISTRY.build("terramind_v1_tokenizer_lulc", pretrained=True)
    assert calls == [(MODALITIES["LULC"].tokenizer_repo, MODALITIES["LULC"].tokenizer_filename)]
    loaded = model.state_dict()
    assert loaded.keys() == state.keys()
    assert all(torch.equal(loaded[k], state[k]) for k in state)
    del model, loaded

    backbone = BACKBONE_REGISTRY.build("terramind_v1_tokenizer_lulc", pretrained=True)
    assert all(torch.equal(v, state[k]) for k, v in backbone.state_dict().items())


def test_checkpoint_that_does_not_fit_raises(lulc_checkpoint, divae):
    path, state = lulc_checkpoint
    before = divae.encoder.proj.weight.clone()
    with pytest.raises(CheckpointError, match="does not fit tokenizer terramind_v1_tokenizer_s1rtc"):
        load_tokenizer_weights(divae, modality="S1RTC", ckpt_path=path)  # a LULC file for S1RTC
    assert torch.equal(divae.encoder.proj.weight, before)  # nothing was copied
    with torch.device("meta"):
        backbone = TokenizerBackbone("LULC")
    with pytest.raises(CheckpointError, match="tensors the model does not have"):  # decoder tensors not dropped
        load_tokenizer_weights(backbone, modality="LULC", ckpt_path=path)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_tokenizer_weights(backbone, modality="LULC", ckpt_path=path.with_name("missing.pt"))
    encoder_only = path.with_name("encoder_only.pt")  # a file lacking the decoder cannot fill the full model
    torch.save({k: v for k, v in state.items() if not k.startswith(DECODER_PREFIXES)}, encoder_only)
    with pytest.raises(CheckpointError, match="missing or have another shape"):
        FULL_MODEL_REGISTRY.build("terramind_v1_tokenizer_lulc", ckpt_path=str(encoder_only))


# ----------------------------------------------------------------------------------------------- DiVAE


def test_divae_round_trip_on_real_chips(divae, terramesh_dir):
    x = read_chips(terramesh_dir, "S1RTC")
    ids = divae.encode_tokens(x)
    assert ids.shape == (2, CROP // 16, CROP // 16) and ids.dtype == torch.int64
    assert 0 <= ids.min() and ids.max() < 15360
    image = divae.decode_tokens(ids, timesteps=2, generator=torch.Generator().manual_seed(0))
    assert image.shape == x.shape and image.dtype == torch.float32
    assert image.min() >= -1 and image.max() <= 1 and image.std() > 0
    again = divae.encode_tokens(image)
    assert again.shape == ids.shape and 0 <= again.min() and again.max() < 15360
    # codes from ids equal the codes the encoder quantised
    assert torch.equal(divae.tokens_to_codes(ids), divae.encode_codes(x))


def test_divae_forward_is_a_reconstruction_in_standardised_range(divae, terramesh_dir):
    x = read_chips(terramesh_dir, "S1RTC", n=1, size=32)
    out = divae(x, timesteps=1, generator=torch.Generator().manual_seed(3))
    assert out.shape == x.shape and -1 <= out.min() and out.max() <= 1


def test_seeded_decoding_is_reproducible(divae):
    ids = torch.tensor([[[1, 15359], [7460, 42]]])
    first = divae.decode_tokens(ids, timesteps=1, generator=torch.Generator().manual_seed(11))
    other = divae.decode_tokens(ids, timesteps=1, generator=torch.Generator().manual_seed(12))
    assert not torch.equal(first, other)
    # generator=None draws the initial noise from the global CPU RNG (as the reference): same seed, same image
    torch.manual_seed(11)
    assert torch.equal(divae.decode_tokens(ids, timesteps=1), first)


def test_divae_decode_size_and_id_checks(divae):
    ids = torch.zeros(1, 1, 1, dtype=torch.long)
    assert divae.decode_tokens(ids, timesteps=1, image_size=(32, 64)).shape == (1, 2, 32, 64)  # not 16 x grid
    with pytest.raises(ConfigError, match="multiple of 32"):
        divae.decode_tokens(ids, timesteps=1, image_size=(48, 64))
    with pytest.raises(DataError, match=r"S1RTC.*\[0, 15360\)"):
        divae.decode_tokens(ids + 15360, timesteps=1)
    with pytest.raises(ConfigError, match="timesteps"):
        divae.decode_tokens(ids, timesteps=0, image_size=32)
    with pytest.raises(DataError, match=r"S1RTC expects \[B, 2, H, W\].*VV, VH"):
        divae.encode_tokens(torch.zeros(1, 3, 32, 32))
    with pytest.raises(DataError, match="divisible by 16"):
        divae.encode_tokens(torch.zeros(1, 2, 40, 32))


# ----------------------------------------------------------------------------------------------- LULC VQVAE


def test_lulc_round_trip_on_real_chips(lulc, terramesh_dir):
    classes = read_chips(terramesh_dir, "LULC")
    assert classes.shape == (2, CROP, CROP)
    ids = lulc.encode_tokens(classes)
    assert ids.shape == (2, 4, 4) and ids.dtype == torch.int64 and 0 <= ids.min() and ids.max() < 4375
    # [B, H, W], [B, 1, H, W] and one-hot [B, 10, H, W] are the same input
    assert torch.equal(lulc.encode_tokens(classes[:, None]), ids)
    assert torch.equal(lulc.encode_tokens(F.one_hot(classes, 10).permute(0, 3, 1, 2).float()), ids)
    logits = lulc.decode_tokens(ids)
    assert logits.shape == (2, 10, CROP, CROP)
    again = lulc.encode_tokens(logits.argmax(dim=1))
    assert again.shape == ids.shape and 0 <= again.min() and again.max() < 4375
    assert torch.equal(lulc(classes), logits)  # forward = decode(encode(x)), deterministic


def test_lulc_input_checks(lulc):
    with pytest.raises(DataError, match=r"LULC class ids must lie in \[0, 10\)"):
        lulc.encode_tokens(torch.full((1, 32, 32), 10))
    with pytest.raises(DataError, match="integer class ids"):
        lulc.encode_tokens(torch.full((1, 32, 32), 0.5))
    with pytest.raises(ConfigError, match="16 x the token grid"):
        lulc.decode_tokens(torch.zeros(1, 2, 2, dtype=torch.long), image_size=64)


def test_lulc_decoder_lays_out_patches_channel_major(lulc):
    # out_proj row (c, ph, pw) must land on channel c at pixel (ph, pw) of the token
    dec = lulc.decoder
    features = torch.randn(1, 768, 1, 2)
    tokens = features.flatten(2).transpose(1, 2) + grid_pos_emb_tokens(dec.pos_emb, (1, 2))
    for block in dec.blocks:
        tokens = block(tokens)
    tokens = tokens + dec.post_mlp(dec.norm_mlp(tokens))
    raw = dec.out_proj(tokens)  # [1, 2 tokens, 10 * 16 * 16]
    out = dec(features)
    c, ph, pw = 3, 5, 11
    assert torch.allclose(out[0, c, ph, 16 + pw], raw[0, 1, c * 256 + ph * 16 + pw], atol=1e-5)


# ----------------------------------------------------------------------------------------------- backbone


def test_tokenizer_backbone_outputs_and_padding(lulc):
    with torch.device("meta"):
        backbone = BACKBONE_REGISTRY.build("terramind_v1_tokenizer_lulc")
    # share the LULC fixture's encoder weights instead of initialising 92M new parameters
    backbone.load_state_dict({k: v for k, v in lulc.state_dict().items() if not k.startswith(DECODER_PREFIXES)},
                             assign=True)
    backbone.quantize.reset_buffers("cpu")
    classes = torch.randint(0, 10, (2, 40, 56))  # padded to 48 x 64 inside
    out = backbone.eval()({"lulc": classes})
    assert len(out) == 12 == len(backbone.out_channels)
    assert out.grid == (3, 4) and out.image_size == (40, 56)
    assert all(layer.shape == (2, 12, 768) for layer in out)
    backbone.return_type = "quantized"
    codes = backbone(classes)[0]
    expected = lulc.encode_codes(F.pad(classes, (0, 8, 0, 8))).flatten(2).transpose(1, 2)
    assert torch.equal(codes, expected)


# ----------------------------------------------------------------------------------------------- pieces


def test_ddim_schedule_matches_the_spec():
    schedule = DDIMSchedule()
    assert schedule.timesteps(10) == list(range(999, 0, -100))
    assert schedule.timesteps(50)[:3] == [999, 979, 959] and schedule.timesteps(50)[-1] == 19
    assert schedule.timesteps(1) == [999]
    assert schedule.timesteps(3) == [999, 666, 333, 0]  # integer stride 1000 // 3, as the reference
    ac = schedule.alphas_cumprod
    assert ac[0].item() == pytest.approx(0.9999, abs=1e-7)
    assert ac[99].item() == pytest.approx(0.89638, abs=1e-5)
    assert ac[499].item() == pytest.approx(0.07603, abs=1e-5)
    assert ac[999].item() == 0.0
    assert torch.all(ac[1:] < ac[:-1])


def test_ddim_step_uses_unclipped_eps_and_ends_with_clipped_x0():
    schedule = DDIMSchedule()
    gen = torch.Generator().manual_seed(0)
    x_t, x0 = torch.randn(2, 3, 8, 8, generator=gen), 2 * torch.randn(2, 3, 8, 8, generator=gen)
    t, n = 499, 5  # previous timestep 299
    a_t, a_prev = schedule.alphas_cumprod[499].double(), schedule.alphas_cumprod[299].double()
    eps = (x_t.double() - a_t.sqrt() * x0.double()) / (1 - a_t).sqrt()
    expected = a_prev.sqrt() * x0.double().clamp(-1, 1) + (1 - a_prev).sqrt() * eps
    assert torch.allclose(schedule.step(x0, t, x_t, n).double(), expected, atol=1e-5)
    last = schedule.step(x0, 99, x_t, 10)  # 99 - 100 < 0 -> alpha_prev = 1
    assert torch.equal(last, x0.clamp(-1, 1))


def test_ddim_matches_diffusers_where_both_apply():
    diffusers = pytest.importorskip("diffusers")  # optional cross-check; not a dependency
    ref = diffusers.DDIMScheduler(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear",
                                  prediction_type="sample", clip_sample=True, thresholding=True,
                                  rescale_betas_zero_snr=True, timestep_spacing="trailing", set_alpha_to_one=True)
    ours = DDIMSchedule()
    assert torch.equal(ours.alphas_cumprod, ref.alphas_cumprod)
    gen = torch.Generator().manual_seed(1)
    for n in (1, 10, 50):  # step counts dividing 1000, where both spacings agree
        ref.set_timesteps(n)
        assert ref.timesteps.tolist() == ours.timesteps(n)
        x = torch.randn(1, 2, 8, 8, generator=gen)
        for t in ours.timesteps(n):
            x0 = 1.5 * torch.randn(1, 2, 8, 8, generator=gen)
            assert torch.allclose(ours.step(x0, t, x, n), ref.step(x0, t, x).prev_sample, atol=1e-6)
            x = ref.step(x0, t, x).prev_sample


def test_unet_concatenates_patched_image_then_codes():
    torch.manual_seed(0)
    unet = PatchedDiffusionUNet(2, cond_channels=5, model_channels=32, channel_mult=(1, 2), num_res_blocks=1,
                                attention_rates=(2,)).eval()
    conv_in = unet.input_blocks[0][0]
    assert conv_in.in_channels == 2 * 16 + 5
    x, cond = torch.randn(1, 2, 16, 16), torch.rand(1, 5, 1, 1)
    with torch.no_grad():
        conv_in.weight[:, 32:] = 0  # cut the code channels: output must not depend on cond
        out = unet(x, 999, cond)
        assert torch.equal(out, unet(x, 999, torch.rand(1, 5, 1, 1)))
        assert not torch.equal(out, unet(torch.randn_like(x), 999, cond))
        assert not torch.equal(out, unet(x, 0, cond))  # the timestep matters
        pair = unet(torch.cat([x, x]), torch.tensor([999, 0]), torch.cat([cond, cond]))  # per-sample timesteps
        assert torch.allclose(pair[0], out, atol=1e-5) and torch.allclose(pair[1], unet(x, 0, cond), atol=1e-5)


def test_encoder_pos_emb_is_sincos_resized_bicubically():
    table = sincos_pos_grid(16, 16)
    assert torch.equal(grid_pos_emb_tokens(table, (16, 16)), table.flatten(2).transpose(1, 2))
    at_224 = grid_pos_emb_tokens(table, (14, 14))
    expected = F.interpolate(table, size=(14, 14), mode="bicubic", align_corners=False)
    assert torch.equal(at_224, expected.flatten(2).transpose(1, 2))


def test_encoder_post_mlp_runs_in_float32_under_autocast(lulc):
    with torch.autocast("cpu", dtype=torch.bfloat16):
        features = lulc.encoder(F.one_hot(torch.randint(0, 10, (1, 32, 32)), 10).permute(0, 3, 1, 2).float())
    assert features.dtype == torch.float32


def test_a_tokenizer_built_with_random_weights_says_so():
    from terramind_ft.hub import CheckpointWarning
    from terramind_ft.registry import FULL_MODEL_REGISTRY

    with pytest.warns(CheckpointWarning, match="terramind_v1_tokenizer_lulc has random weights"):
        FULL_MODEL_REGISTRY.build("terramind_v1_tokenizer_lulc")
