"""Sampling options mean what the reference says (4M's top-k / top-p filtering), written from first principles."""

from __future__ import annotations

import math

import pytest
import torch

from terramind_ft.errors import ConfigError
from terramind_ft.models.terramind.sampling import SamplingSettings, filter_top_k, filter_top_p

PROBS = torch.tensor([0.5, 0.3, 0.15, 0.05])
LOGITS = PROBS.log()


def kept(filtered: torch.Tensor) -> list[int]:
    return [i for i, v in enumerate(filtered.tolist()) if math.isfinite(v)]


def test_top_p_zero_is_off_not_one_token():
    assert kept(filter_top_p(LOGITS, 0.0)) == [0, 1, 2, 3]


def test_a_float_top_k_is_a_fraction_of_the_vocabulary():
    logits = torch.randn(3, 1000)
    out = filter_top_k(logits, 0.01)  # int(0.01) = 0 used to switch the filter off
    assert (torch.isfinite(out).sum(-1) == 10).all()
    top = logits.topk(10, dim=-1).indices
    assert torch.isfinite(out.gather(-1, top)).all()
    assert (torch.isfinite(filter_top_k(logits, 25)).sum(-1) == 25).all()
    assert torch.isfinite(filter_top_k(logits, 0)).all()


def test_settings_refuse_what_has_no_meaning():
    SamplingSettings(top_k=0.01, top_p=0.0)
    with pytest.raises(ConfigError, match="top_k"):
        SamplingSettings(top_k=2.5)
    with pytest.raises(ConfigError, match="top_k"):
        SamplingSettings(top_k=-1)
