"""``modality_drop_rate`` regularises as the reference does: one input drawn at random always stays, each other
input is dropped with the rate; TiM's generated modalities are never dropped."""

from __future__ import annotations

from collections import Counter

import torch

from terramind_ft.models.terramind.encoder import TerraMindEncoder

DRAWS = 4000


def _kept_sets(model, names, draws=DRAWS):
    inputs = [(model.spec_for(n), None) for n in names]
    torch.manual_seed(0)
    return Counter(tuple(s.name for s, _ in model._drop_modalities(inputs)) for _ in range(draws))


def test_two_inputs_keep_both_with_one_minus_the_rate():
    model = TerraMindEncoder(["S2L2A", "S1GRD"], size="tiny", modality_drop_rate=0.5)
    counts = _kept_sets(model, ["S2L2A", "S1GRD"])
    # reference: one of the two is spared, the other dropped with p = 0.5 -> both kept 50 %, each alone 25 %
    # (the old rule, each dropped independently and one restored when both went, gave both kept 25 %)
    assert abs(counts[("S2L2A", "S1GRD")] / DRAWS - 0.5) < 0.03
    assert abs(counts[("S2L2A",)] / DRAWS - 0.25) < 0.03 and abs(counts[("S1GRD",)] / DRAWS - 0.25) < 0.03
    assert sum(counts.values()) == DRAWS  # never none


def test_three_inputs_drop_two_times_the_rate_on_average():
    model = TerraMindEncoder(["S2L2A", "S1GRD", "DEM"], size="tiny", modality_drop_rate=0.3)
    counts = _kept_sets(model, ["S2L2A", "S1GRD", "DEM"])
    mean_dropped = sum((3 - len(k)) * n for k, n in counts.items()) / DRAWS
    assert abs(mean_dropped - 2 * 0.3) < 0.04
    assert abs(counts[("S2L2A", "S1GRD", "DEM")] / DRAWS - 0.7 ** 2) < 0.03


def test_tim_modalities_are_never_dropped():
    from terramind_ft.models.terramind.tim import TerraMindTiM

    model = TerraMindTiM(["S2L2A", "S1GRD"], tim_modalities=["LULC"], size="tiny", modality_drop_rate=0.9,
                         pretrained=False)
    names = ["S2L2A", "S1GRD", *model._tim_names]
    counts = _kept_sets(model, names, draws=500)
    assert all(model._tim_names[0] in kept for kept in counts)
    assert all(len(kept) >= 2 for kept in counts)  # one input and the TiM tokens
