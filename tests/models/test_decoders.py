"""Decoders, smp style: one shared tester class; each decoder subclasses it with its own inputs."""

from __future__ import annotations

import pytest
import torch

from terramind_ft.errors import ConfigError
from terramind_ft.registry import DECODER_REGISTRY


class DecoderTester:
    """Shared checks: output width == ``out_channels``, expected spatial size, gradients reach every input
    that should be used, batch independence (eval mode), and registry construction by name."""

    name: str
    embed_dim: list[int]
    sizes: list[tuple[int, int]]  # spatial size of each input map
    kwargs: dict = {}
    expected_size: tuple[int, int]
    used_inputs: tuple[int, ...]  # indices of the inputs the output depends on

    def build(self):
        return DECODER_REGISTRY.build(self.name, self.embed_dim, **self.kwargs)

    def inputs(self, batch=2):
        return [torch.randn(batch, c, *s, requires_grad=True) for c, s in zip(self.embed_dim, self.sizes)]

    def test_output_shape_matches_out_channels(self):
        dec = self.build()
        out = dec(self.inputs())
        assert out.shape == (2, dec.out_channels, *self.expected_size)

    def test_gradients_reach_used_inputs(self):
        dec = self.build()
        feats = self.inputs()
        dec(feats).square().mean().backward()
        used = {i for i, f in enumerate(feats) if f.grad is not None and f.grad.abs().sum() > 0}
        assert used == set(self.used_inputs)

    def test_samples_are_independent_in_eval(self):
        dec = self.build().eval()
        feats = [f.detach() for f in self.inputs(batch=3)]
        full = dec(feats)
        single = dec([f[1:2] for f in feats])
        torch.testing.assert_close(full[1:2], single, rtol=1e-4, atol=1e-5)

    def test_non_square_input(self):
        dec = self.build()
        feats = [torch.randn(1, c, s[0], s[1] * 2) for c, s in zip(self.embed_dim, self.sizes)]
        out = dec(feats)
        assert out.shape[-2:] == (self.expected_size[0], self.expected_size[1] * 2)


class TestUNetDecoder(DecoderTester):
    name = "UNetDecoder"
    embed_dim = [8, 16, 32, 32]
    sizes = [(16, 16), (8, 8), (4, 4), (2, 2)]
    kwargs = {"channels": [32, 16, 8, 4]}
    expected_size = (16, 16)  # the last block refines at the finest map's size (smp >= 0.5, as TerraTorch)
    used_inputs = (0, 1, 2, 3)

    def test_channel_count_must_match_maps(self):
        with pytest.raises(ConfigError, match="one decoder channel per feature map"):
            DECODER_REGISTRY.build(self.name, self.embed_dim, channels=[16, 8])


class TestUperNetDecoder(DecoderTester):
    name = "UperNetDecoder"
    embed_dim = [8, 16, 32, 32]
    sizes = [(16, 16), (8, 8), (4, 4), (2, 2)]
    kwargs = {"channels": 16, "pool_scales": (1, 2)}
    expected_size = (16, 16)
    used_inputs = (0, 1, 2, 3)


class TestUperNetDecoderScaleModules(DecoderTester):
    name = "UperNetDecoder"
    embed_dim = [16, 16, 16, 16]
    sizes = [(4, 4)] * 4
    kwargs = {"channels": 8, "pool_scales": (1,), "scale_modules": True}
    expected_size = (16, 16)
    used_inputs = (0, 1, 2, 3)


class TestFCNDecoder(DecoderTester):
    name = "FCNDecoder"
    embed_dim = [8, 16]
    sizes = [(4, 4), (4, 4)]
    kwargs = {"channels": 8, "num_convs": 3}
    expected_size = (32, 32)
    used_inputs = (1,)


class TestIdentityDecoder(DecoderTester):
    name = "IdentityDecoder"
    embed_dim = [8, 16]
    sizes = [(4, 4), (4, 4)]
    kwargs = {"out_index": 0}
    expected_size = (4, 4)
    used_inputs = (0,)


class TestLinearDecoder(DecoderTester):
    name = "LinearDecoder"
    embed_dim = [8, 16]
    sizes = [(4, 4), (4, 4)]
    kwargs = {"num_classes": 3, "upsampling_size": 4}
    expected_size = (16, 16)
    used_inputs = (1,)

    def test_upsampling_size_is_required_and_named(self):
        with pytest.raises(ConfigError, match="decoder_upsampling_size"):
            DECODER_REGISTRY.build(self.name, self.embed_dim, num_classes=3)


class TestMLPDecoder(DecoderTester):
    name = "MLPDecoder"
    embed_dim = [8, 16]
    sizes = [(4, 4), (4, 4)]
    kwargs = {"activation": "GELU"}
    expected_size = (4, 4)
    used_inputs = (0, 1)  # every feature is concatenated

    def test_width_is_the_last_features_and_vectors_work(self):
        dec = self.build()
        assert dec.out_channels == 16
        assert dec([torch.randn(3, 8), torch.randn(3, 16)]).shape == (3, 16)

    def test_features_of_different_sizes_are_refused_with_the_fix(self):
        dec = self.build()
        with pytest.raises(ConfigError, match="sizes differ.*SelectIndices"):
            dec([torch.randn(1, 8, 8, 8), torch.randn(1, 16, 4, 4)])

    def test_unknown_activation_is_named(self):
        with pytest.raises(ConfigError, match="decoder_activation"):
            DECODER_REGISTRY.build(self.name, self.embed_dim, activation="Swoosh")

    def test_arguments_terratorch_ignores_too_are_not_dropped_silently(self):
        with pytest.warns(UserWarning, match="decoder_channels=256 has no effect"):
            DECODER_REGISTRY.build(self.name, self.embed_dim, channels=256)
