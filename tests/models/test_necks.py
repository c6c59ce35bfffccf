"""Necks: channel bookkeeping, non-square token grids, pyramids, pooling, config errors."""

from __future__ import annotations

import pytest
import torch

from terramind_ft.errors import ConfigError
from terramind_ft.models.necks import (AggregateTokens, InterpolateToPyramidal, LearnedInterpolateToPyramidal,
                                       MaxpoolToPyramidal, ReshapeTokensToImage, SelectIndices, build_necks)


def tokens(n_layers=6, b=2, h=3, w=5, d=8):
    return [torch.randn(b, h * w, d) + i for i in range(n_layers)]


def test_select_indices_keeps_layers_and_channels():
    feats = tokens()
    neck = SelectIndices([8] * 6, indices=[1, 3, -1])
    out = neck(feats, (3, 5))
    assert [o.mean().round().item() for o in out] == [1, 3, 5]
    assert neck.out_channels == [8, 8, 8]
    with pytest.raises(ConfigError, match="out of range"):
        SelectIndices([8] * 6, indices=[6])


def test_reshape_tokens_uses_non_square_grid():
    feats = tokens(1, h=3, w=5)
    out = ReshapeTokensToImage([8])(feats, (3, 5))[0]
    assert out.shape == (2, 8, 3, 5)
    # token (row 1, col 4) lands at [..., 1, 4]
    assert torch.equal(out[:, :, 1, 4], feats[0][:, 1 * 5 + 4])


def test_reshape_tokens_remove_cls_token_only_when_there_is_one():
    feats = tokens(1, h=2, w=2)
    neck = ReshapeTokensToImage([8], remove_cls_token=True)
    assert torch.equal(neck(feats, (2, 2))[0][:, :, 0, 0], feats[0][:, 0])  # no CLS: nothing dropped
    with_cls = [torch.cat([torch.zeros(2, 1, 8), feats[0]], dim=1)]
    assert torch.equal(neck(with_cls, (2, 2))[0], neck(feats, (2, 2))[0])
    with pytest.raises(ValueError, match="token grid"):
        ReshapeTokensToImage([8])(tokens(1, h=2, w=3), (2, 2))


def test_learned_interpolate_to_pyramidal_shapes():
    maps = [torch.randn(1, 16, 4, 6) for _ in range(4)]
    neck = LearnedInterpolateToPyramidal([16] * 4)
    out = neck(maps, (4, 6))
    assert [tuple(o.shape[1:]) for o in out] == [(4, 16, 24), (8, 8, 12), (16, 4, 6), (16, 2, 3)]
    assert neck.out_channels == [4, 8, 16, 16]
    with pytest.raises(ConfigError, match="exactly 4"):
        LearnedInterpolateToPyramidal([16] * 3)


def test_interpolate_and_maxpool_pyramids():
    maps = [torch.randn(1, 4, 4, 4) for _ in range(3)]
    up = InterpolateToPyramidal([4] * 3)(maps, (4, 4))
    assert [o.shape[-1] for o in up] == [32, 16, 8]  # x2 per level, the coarsest x2 the grid (TerraTorch's)
    down = MaxpoolToPyramidal([4] * 3)(maps, (4, 4))
    assert [o.shape[-1] for o in down] == [4, 2, 1]
    assert torch.equal(down[1], torch.nn.functional.max_pool2d(maps[1], 2))


@pytest.mark.parametrize("pooling,expected", [("mean", lambda t: t.mean(1)), ("max", lambda t: t.amax(1)),
                                              ("min", lambda t: t.amin(1)), (0, lambda t: t[:, 0])])
def test_aggregate_tokens(pooling, expected):
    feats = tokens(3)
    out = AggregateTokens([8] * 3, pooling=pooling)(feats, (3, 5))
    assert len(out) == 1 and torch.allclose(out[0], expected(feats[-1]))
    with pytest.raises(ConfigError, match="CLS"):
        AggregateTokens([8], pooling="CLS")


def test_build_necks_chain_and_errors_name_the_item():
    seq = build_necks([{"name": "SelectIndices", "indices": [0, 1, 2, 3]}, {"name": "ReshapeTokensToImage"},
                       {"name": "LearnedInterpolateToPyramidal"}], [32] * 6)
    assert seq.out_channels == [8, 16, 32, 32]
    out = seq(tokens(6, d=32, h=2, w=2), (2, 2))
    assert [o.shape[-1] for o in out] == [8, 4, 2, 1]
    with pytest.raises(ConfigError, match=r"necks\[1\].*Did you mean 'ReshapeTokensToImage'"):
        build_necks([{"name": "SelectIndices", "indices": [0]}, {"name": "ReshapeTokenToImage"}], [8])
    with pytest.raises(ConfigError, match=r"necks\[0\].*indice"):
        build_necks([{"name": "SelectIndices", "indice": [0]}], [8])
    with pytest.raises(ConfigError, match=r"necks\[0\].*out of range"):
        build_necks([{"name": "SelectIndices", "indices": [9]}], [8])
