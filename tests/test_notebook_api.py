"""The IBM/terramind notebooks' and TerraTorch docs' cells, with only the import lines changed
(``terratorch`` -> ``terramind_ft``), on the tiny model with random weights (``pretrained=False``; the notebooks
download the official weights, which this machine cannot)."""

from __future__ import annotations

import warnings

import pytest
import torch

# --- the notebooks' imports, changed ---------------------------------------------------------------------------
from terramind_ft import BACKBONE_REGISTRY, FULL_MODEL_REGISTRY  # from terratorch import ...
from terramind_ft.tasks.tiled_inference import tiled_inference  # from terratorch.tasks.tiled_inference import ...
from terramind_ft import v1_pretraining_mean, v1_pretraining_std  # from terratorch...terramind_register import ...

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _quiet_random_weights():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*random weights.*")
        yield


def test_tokenizer_reconstruction_cells():
    model = FULL_MODEL_REGISTRY.build("terramind_v1_tokenizer_s2l2a", pretrained=False)
    for batch in (1, 3):  # encode() returned only the last sample's ids at batch 3 and failed at batch 1
        input = torch.randn(batch, 12, 64, 64)
        with torch.no_grad():
            _, _, tokens = model.encode(input)
            reconstruction = model.decode_tokens(tokens, verbose=True, timesteps=2)
        assert tokens.shape == (batch, 4, 4) and tokens.dtype == torch.int64
        assert reconstruction.shape == input.shape
    with torch.no_grad():
        assert model(input, timesteps=2, verbose=True).shape == input.shape


def test_generation_cell_takes_verbose_and_timesteps():
    model = FULL_MODEL_REGISTRY.build("terramind_v1_tiny_generate", modalities=["S2L2A"], output_modalities=["LULC"],
                                      pretrained=False, standardize=True, tokenizer_kwargs={"LULC": {"pretrained": False}})
    s2 = torch.tensor(v1_pretraining_mean["untok_sen2l2a@224"])[None, :, None, None] + \
        torch.tensor(v1_pretraining_std["untok_sen2l2a@224"])[None, :, None, None] * torch.randn(1, 12, 64, 64)
    with torch.no_grad():
        generated = model(s2, verbose=True, timesteps=10)  # 'verbose' was read as a modality name
    assert generated["LULC"].shape == (1, 10, 64, 64)


def test_large_tile_generation_with_tiled_inference():
    model = FULL_MODEL_REGISTRY.build("terramind_v1_tiny_generate", modalities=["S2L2A"], output_modalities=["LULC"],
                                      pretrained=False, standardize=True, tokenizer_kwargs={"LULC": {"pretrained": False}})
    input = torch.randn(1, 12, 320, 320)

    def model_forward(x):
        generated = model(x, timesteps=1)
        return generated["LULC"]

    with torch.no_grad():
        pred = tiled_inference(model_forward, input, crop=256, stride=192, batch_size=16, verbose=True)
    assert pred.shape == (1, 10, 320, 320)
    torch.testing.assert_close(pred.sum(1), torch.ones(1, 320, 320), atol=1e-4, rtol=0)


def test_backbone_building_cells():
    model = BACKBONE_REGISTRY.build("terramind_v1_tiny", modalities=["S2L2A", "S1GRD"], pretrained=False)
    with torch.no_grad():
        features = model({"S2L2A": torch.randn(1, 12, 64, 64), "S1GRD": torch.randn(1, 2, 64, 64)})
    assert len(features) == 12 and features[-1].shape == (1, 16, 192)
    with pytest.raises(Exception, match="modalities"):  # no silent random 'image' modality
        BACKBONE_REGISTRY.build("terramind_v1_tiny", pretrained=False)


def test_pretraining_tables_come_from_the_catalogue():
    from terramind_ft.modalities import MODALITIES

    assert v1_pretraining_mean["untok_sen1grd@224"] == list(MODALITIES["S1GRD"].mean)
    assert set(v1_pretraining_std) == {m.pixel_key for m in MODALITIES.values() if m.pixel_key}
