"""FSQ quantiser: exact parity with the reference (fixture case g), catalogue levels, rounding, gradients."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from terramind_ft.errors import ConfigError, DataError
from terramind_ft.modalities import MODALITIES, TOKEN_MODALITIES
from terramind_ft.models.tokenizers.fsq import FSQ


@pytest.fixture(scope="module")
def case_g(terramind_ref):
    return load_file(str(terramind_ref / "case_g.safetensors"))


@pytest.mark.parametrize("variant, modality", [("lulc", "LULC"), ("s2l2a", "S2L2A")])
def test_fsq_matches_reference_case_g_exactly(case_g, variant, modality):
    fsq = FSQ.for_modality(modality)
    out = fsq(case_g[f"fsq_{variant}.latent"])
    assert out.indices.dtype == torch.int32
    assert torch.equal(out.indices, case_g[f"fsq_{variant}.indices"])
    assert torch.equal(out.codes, case_g[f"fsq_{variant}.code"])
    assert torch.equal(fsq.dequantize(out.indices), case_g[f"fsq_{variant}.dequant"])
    assert torch.equal(fsq.codebook, case_g[f"fsq_{variant}.codebook"])


@pytest.mark.parametrize("modality", TOKEN_MODALITIES)
def test_levels_and_vocabulary_come_from_the_catalogue(modality):
    fsq = FSQ.for_modality(modality)
    m = MODALITIES[modality]
    assert fsq.levels == m.fsq_levels
    assert fsq.vocab_size == m.vocab_size == fsq.codebook.shape[0]
    assert fsq.codebook.shape[1] == fsq.dim == 5
    assert fsq.state_dict() == {}  # level/basis/codebook buffers are non-persistent: not in the tokenizer files


def test_basis_makes_channel_zero_least_significant():
    assert FSQ((8, 8, 8, 6, 5))._basis.tolist() == [1, 8, 64, 512, 3072]
    assert FSQ((7, 5, 5, 5, 5))._basis.tolist() == [1, 7, 35, 175, 875]
    fsq = FSQ((7, 5, 5, 5, 5))
    assert fsq.indices_to_codes(torch.tensor([1]))[0].tolist() == pytest.approx([1 / 6, 0, 0, 0, 0])
    assert fsq.indices_to_codes(torch.tensor([7]))[0].tolist() == pytest.approx([0, 0.25, 0, 0, 0])


def test_rounding_is_half_to_even():
    # z = 0 -> sigmoid = 0.5 exactly -> 0.5 * (L - 1) = 3.5, 3.5, 3.5, 2.5, 2.0 -> digits 4, 4, 4, 2, 2
    out = FSQ((8, 8, 8, 6, 5))(torch.zeros(1, 5, 1, 1))
    assert out.indices.item() == 4 * 1 + 4 * 8 + 4 * 64 + 2 * 512 + 2 * 3072
    assert out.codes.flatten().tolist() == pytest.approx([4 / 7, 4 / 7, 4 / 7, 2 / 5, 2 / 4])


@pytest.mark.parametrize("levels", [(8, 8, 8, 6, 5), (7, 5, 5, 5, 5)])
def test_every_codebook_entry_quantises_to_its_own_index(levels):
    fsq = FSQ(levels)
    latent = torch.logit(fsq.codebook.double()).float().T.reshape(1, 5, 1, -1)  # codes 0/1 -> -inf/+inf
    out = fsq(latent)
    assert torch.equal(out.indices.flatten().long(), torch.arange(fsq.vocab_size))
    assert torch.equal(out.codes.reshape(5, -1).T, fsq.codebook)


def test_straight_through_gradient_reaches_the_latent():
    latent = torch.randn(2, 5, 3, 3, requires_grad=True)
    FSQ((8, 8, 8, 6, 5))(latent).codes.sum().backward()
    expected = torch.sigmoid(latent) * (1 - torch.sigmoid(latent))  # d code / d z = sigmoid'(z) (scale cancels)
    assert torch.allclose(latent.grad, expected, atol=1e-6)


def test_errors_name_the_problem():
    fsq = FSQ.for_modality("LULC")
    with pytest.raises(DataError, match=r"LULC.*\[0, 4375\).*4375"):
        fsq.dequantize(torch.tensor([[[0, 4375]]]))
    with pytest.raises(DataError, match="integer token ids"):
        fsq.dequantize(torch.zeros(1, 2, 2))
    with pytest.raises(DataError, match=r"\[B, 5, h, w\]"):
        fsq(torch.zeros(1, 4, 2, 2))
    with pytest.raises(ConfigError, match="S2L1C.*no tokenizer"):
        FSQ.for_modality("S2L1C")
    with pytest.raises(ConfigError, match="levels"):
        FSQ((8, 1))


def test_builds_on_the_meta_device():
    with torch.device("meta"):
        fsq = FSQ.for_modality("S2L2A")
    assert fsq.codebook.device.type == "meta" and fsq.vocab_size == 15360
