"""Band order means what it says: the patch-embedding columns follow the requested bands, whatever their count.

First principles, independent of how a projection lays out its columns: a backbone asked for the bands in another
order, fed the same image with its channels in that order, must compute exactly what the pretrained order computes.
"""

from __future__ import annotations

import pytest
import torch

from terramind_ft.models.terramind.encoder import TerraMindEncoder
from terramind_ft.modalities import MODALITIES


def tiny(modalities, **kwargs) -> TerraMindEncoder:
    return TerraMindEncoder(modalities, size="tiny", **kwargs).eval()


@pytest.fixture()
def official(tmp_path):
    """A checkpoint in the official layout: every modality's projection over all its bands, pretrained order."""
    torch.manual_seed(0)
    donor = tiny(["S2L2A", "S1GRD", "RGB"])
    path = tmp_path / "official.pt"
    torch.save(donor.state_dict(), path)
    return path


@pytest.mark.parametrize("modality,order", [
    ("S1GRD", [1, 0]),  # bands={"S1GRD": ["VH", "VV"]}
    ("RGB", [2, 1, 0]),  # BGR
    ("S2L2A", list(range(12))[::-1]),  # all 12 reversed
    ("S2L2A", [3, 1, 2, 0, 4, 5, 6, 7, 8, 9, 11, 10]),
])
def test_a_full_length_permutation_follows_the_band_names(official, modality, order):
    bands = [MODALITIES[modality].bands[i] for i in order]
    reference = tiny([modality], ckpt_path=str(official))
    permuted = tiny([modality], ckpt_path=str(official), bands={modality: bands})
    x = torch.randn(2, len(order), 32, 32)
    with torch.no_grad():
        expected = reference({modality: x})[-1]
        got = permuted({modality: x[:, order]})[-1]
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)  # was max diff ~10: columns copied as saved
    assert any("in pretrained band order" in line for line in permuted.load_report.info)


def test_a_fine_tuned_permuted_projection_loads_as_saved_and_remaps_to_another_order(official, tmp_path):
    bands = ["VH", "VV"]
    tuned = tiny(["S1GRD"], ckpt_path=str(official), bands={"S1GRD": bands})
    with torch.no_grad():  # "fine-tuning": the projection no longer equals the pretrained one
        tuned.encoder_embeddings["untok_sen1grd@224"].proj.weight.add_(0.5 * torch.randn_like(
            tuned.encoder_embeddings["untok_sen1grd@224"].proj.weight))
    saved = tmp_path / "tuned.pt"
    torch.save(tuned.state_dict(), saved)
    again = tiny(["S1GRD"], ckpt_path=str(saved), bands={"S1GRD": bands})
    assert torch.equal(again.encoder_embeddings["untok_sen1grd@224"].proj.weight,
                       tuned.encoder_embeddings["untok_sen1grd@224"].proj.weight)
    assert any("as saved" in line for line in again.load_report.info)
    other = tiny(["S1GRD"], ckpt_path=str(saved), bands={"S1GRD": ["VV", "VH"]})
    x = torch.randn(1, 2, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(other({"S1GRD": x})[-1], tuned({"S1GRD": x[:, [1, 0]]})[-1], atol=1e-5, rtol=1e-5)


def test_a_projection_of_another_band_count_is_refused(official, tmp_path):
    narrowed = tiny(["S2L2A"], ckpt_path=str(official), bands={"S2L2A": ["RED", "GREEN", "BLUE"]})
    state = {k: v for k, v in narrowed.state_dict().items() if not k.endswith("band_order")}
    torch.save(state, tmp_path / "three.pt")
    with pytest.raises(Exception, match="3 band columns"):
        tiny(["S2L2A"], ckpt_path=str(tmp_path / "three.pt"), bands={"S2L2A": ["RED", "GREEN", "BLUE", "NIR_NARROW"]})
