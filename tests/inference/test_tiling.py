"""In-memory tiled inference: equality with a full-image forward, coverage, small images, dict inputs, options."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from terramind_ft.errors import ConfigError, InferenceError
from terramind_ft.inference import tiling
from terramind_ft.inference.tiling import TilingParameters, padded_indices, plan_axis, tiled_inference

DELTA = 8


def local_model(in_channels: int = 3, out_channels: int = 4, padding_mode: str = "zeros") -> torch.nn.Module:
    """Three 3x3 convolutions: each output pixel sees a 7x7 neighbourhood (radius 3 <= DELTA)."""
    torch.manual_seed(0)
    layers = []
    channels = [in_channels, 8, 8, out_channels]
    for i in range(3):
        layers.append(torch.nn.Conv2d(channels[i], channels[i + 1], 3, padding=1, padding_mode=padding_mode))
        if i < 2:
            layers.append(torch.nn.GELU())
    return torch.nn.Sequential(*layers).eval()


def reference_reflect(model: torch.nn.Module, x: torch.Tensor, pad: int = DELTA) -> torch.Tensor:
    """What tiling with reflect padding must reproduce: the model on the mirrored image, cropped back."""
    with torch.no_grad():
        return model(F.pad(x, (pad, pad, pad, pad), mode="reflect"))[..., pad:-pad, pad:-pad]


@pytest.mark.parametrize("blend", ["cosine", "gaussian", None])
def test_equals_full_image_forward_with_reflect_padding(blend):
    model = local_model()
    x = torch.randn(2, 3, 203, 317)
    out = tiled_inference(model, x, crop=64, stride=40, delta=DELTA, blend=blend, batch_size=5)
    assert out.shape == (2, 4, 203, 317) and out.dtype == torch.float32
    # Same pixels, only the order of float additions differs (weighted mean of equal values).
    torch.testing.assert_close(out, reference_reflect(model, x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("blend", ["cosine", "gaussian", None])
def test_equals_full_image_forward_without_padding(blend):
    model = local_model()
    x = torch.randn(1, 3, 150, 97)
    with torch.no_grad():
        full = model(x)
    out = tiled_inference(model, x, crop=48, stride=32, delta=DELTA, blend=blend, padding=None)
    torch.testing.assert_close(out, full, atol=1e-5, rtol=1e-5)


def test_a_model_wider_than_delta_differs_but_only_near_chip_borders():
    """Guards the test above: with a receptive field wider than delta, tiling is *not* exact."""
    model = torch.nn.Conv2d(3, 2, 21, padding=10).eval()  # radius 10 > delta 2
    x = torch.randn(1, 3, 128, 128)
    out = tiled_inference(model, x, crop=64, stride=48, delta=2, blend=None)
    assert (out - reference_reflect(model, x, pad=2)).abs().max() > 1e-3


@pytest.mark.parametrize("length", [1, 2, 7, 63, 64, 65, 100, 257, 1000])
@pytest.mark.parametrize("crop,stride,delta", [(64, 48, 8), (64, 64, 0), (32, 17, 7), (224, 192, 8), (16, 1, 2)])
@pytest.mark.parametrize("padded", [True, False])
def test_chip_plan_covers_every_pixel_once_contiguously(length, crop, stride, delta, padded):
    chips = plan_axis(length, crop, stride, delta, padded)
    covered = np.zeros(length, int)
    for c in chips:
        assert c.keep_lo < c.keep_hi and len(c.weight) == c.keep_hi - c.keep_lo
        assert np.all(c.weight > 0) and np.all(c.weight <= 1)
        assert c.size == (crop if padded else min(crop, length))
        covered[c.keep_lo:c.keep_hi] += 1
    assert covered.min() >= 1, f"uncovered pixels: {np.flatnonzero(covered == 0)}"
    starts = [c.start for c in chips]
    assert starts == sorted(set(starts))


def test_uncovered_pixels_raise(monkeypatch):
    real_plan = tiling.plan_axis

    def plan_with_a_gap(*args, **kwargs):
        chips = real_plan(*args, **kwargs)
        return chips[:1] + chips[2:]  # drop the second chip of each axis

    monkeypatch.setattr(tiling, "plan_axis", plan_with_a_gap)
    with pytest.raises(InferenceError, match="without a prediction"):
        tiled_inference(local_model(), torch.randn(1, 3, 200, 200), crop=64, stride=48)


@pytest.mark.parametrize("size", [(1, 1), (5, 7), (30, 200), (64, 64), (65, 63)])
def test_images_smaller_than_a_chip(size):
    model = local_model()
    x = torch.randn(1, 3, *size)
    out = tiled_inference(model, x, crop=64, stride=48, delta=DELTA)
    assert out.shape == (1, 4, *size)
    # The chip is the image mirrored (repeatedly, for tiny images) up to the chip size; numpy's reflect pad
    # repeats mirroring the same way, so the full-image reference is the model on that padded image.
    h, w = size
    pad_h, pad_w = max(DELTA, 64 - h - DELTA), max(DELTA, 64 - w - DELTA)
    padded = torch.from_numpy(np.pad(x.numpy(), ((0, 0), (0, 0), (DELTA, pad_h), (DELTA, pad_w)), mode="reflect"))
    with torch.no_grad():
        expected = model(padded)[..., DELTA:DELTA + h, DELTA:DELTA + w]
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    # Without padding a chip shrinks to the image: one direct call.
    out = tiled_inference(model, x, crop=64, stride=48, padding=None)
    with torch.no_grad():
        torch.testing.assert_close(out, model(x), atol=1e-6, rtol=1e-6)


def test_padded_indices_match_numpy_reflect_for_any_pad():
    for n in (1, 2, 3, 9):
        for pad in (1, 4, 20):
            idx, valid = padded_indices(-pad, n + 2 * pad, n, "reflect")
            assert valid is None
            np.testing.assert_array_equal(np.arange(n)[idx], np.pad(np.arange(n), pad, mode="reflect"))
    idx, valid = padded_indices(-2, 6, 4, "constant")
    np.testing.assert_array_equal(valid, [False, False, True, True, True, True])


class DictModel(torch.nn.Module):
    """A two-modality model: S2 [B, 4, H, W] and a temporal S1 [B, 2, T, H, W] (time averaged)."""

    def __init__(self):
        super().__init__()
        self.net = local_model(in_channels=6, out_channels=3)

    def forward(self, inputs: dict[str, torch.Tensor], scale: float = 1.0) -> torch.Tensor:
        return self.net(torch.cat([inputs["S2L2A"], inputs["S1GRD"].mean(dim=2)], dim=1)) * scale


def test_dict_input_is_tiled_per_modality_and_kwargs_are_forwarded():
    model = DictModel().eval()
    inputs = {"S2L2A": torch.randn(2, 4, 130, 170), "S1GRD": torch.randn(2, 2, 3, 130, 170)}
    out = tiled_inference(model, inputs, crop=64, stride=48, scale=2.0)
    stacked = torch.cat([inputs["S2L2A"], inputs["S1GRD"].mean(dim=2)], dim=1)
    torch.testing.assert_close(out, 2.0 * reference_reflect(model.net, stacked), atol=1e-5, rtol=1e-5)


def test_dict_input_with_mismatched_grids_is_refused():
    inputs = {"S2L2A": torch.randn(1, 4, 100, 100), "S1GRD": torch.randn(1, 2, 50, 50)}
    with pytest.raises(InferenceError, match=r"S2L2A: \(1, 4, 100, 100\).*S1GRD: \(1, 2, 50, 50\)"):
        tiled_inference(DictModel(), inputs, crop=64, stride=48)


def test_overlaps_are_blended_with_a_smooth_ramp():
    """A model that paints each chip with its own constant: the overlap ramps from one value to the next."""
    calls = []

    def chip_painter(x):
        values = torch.arange(len(calls) * x.shape[0], (len(calls) + 1) * x.shape[0], dtype=torch.float32)
        calls.append(1)
        return values[:, None, None, None].expand(-1, 1, *x.shape[-2:])

    x = torch.zeros(1, 1, 56, 200)  # 56 + 2 * delta = 64: a single row of chips
    out = tiled_inference(chip_painter, x, crop=64, stride=48, delta=4, batch_size=1, blend="cosine")[0, 0, 28]
    # Chip 0 keeps columns 0..55, chip 1 keeps 48..103: only the 8 shared columns mix, along a rising ramp.
    assert torch.all(out[:48] == 0) and torch.all(out[56:60] == 1)
    ramp = out[48:56]
    assert torch.all(ramp > 0) and torch.all(ramp < 1) and torch.all(ramp[1:] > ramp[:-1])
    calls.clear()
    hard = tiled_inference(chip_painter, x, crop=64, stride=48, delta=4, batch_size=1, blend=None)[0, 0, 28]
    assert torch.all(hard[48:56] == 0.5)  # without blending: the plain mean of the two chips


def test_average_patches_false_takes_the_last_chip():
    calls = []

    def chip_painter(x):
        calls.append(1)
        return torch.full((x.shape[0], 1, *x.shape[-2:]), float(len(calls)))

    out = tiled_inference(chip_painter, torch.zeros(1, 1, 64, 112), crop=64, stride=48, delta=0, batch_size=1,
                          average_patches=False)
    assert set(out.unique().tolist()) == {1.0, 2.0}
    assert torch.all(out[..., 48:] == 2.0)  # the second chip overwrote the overlap


def test_output_float32_on_input_device_and_verbose_progress(capsys):
    x = torch.randn(1, 3, 100, 100, dtype=torch.float64)
    out = tiled_inference(lambda t: t[:, :1].float(), x, crop=64, stride=48, verbose=True)
    assert out.dtype == torch.float32 and out.device == x.device
    torch.testing.assert_close(out, x[:, :1].float())  # identity is reproduced exactly
    assert "tiled inference" in capsys.readouterr().err


def test_delta_too_large_for_the_overlap_is_reduced_with_a_warning():
    model = local_model()
    x = torch.randn(1, 3, 100, 100)
    with pytest.warns(UserWarning, match="using delta=2"):
        out = tiled_inference(model, x, crop=64, stride=60, delta=DELTA)
    assert out.shape == (1, 4, 100, 100)


def test_parameters_accept_terratorch_keys_and_reject_unknown_ones():
    p = TilingParameters.from_mapping({"crop": 224, "stride": 192, "delta": 8, "blend_overlaps": False,
                                       "padding": False, "verbose": True, "average_patches": True})
    assert (p.h_crop, p.w_crop, p.h_stride, p.blend, p.padding) == (224, 224, 192, "none", "none")
    p = TilingParameters.from_mapping({"crop": 128, "h_crop": 64, "stride": 32})
    assert (p.h_crop, p.w_crop) == (64, 128)
    with pytest.raises(ConfigError, match="tiled_inference_parameters.strde.*Did you mean 'stride'"):
        TilingParameters.from_mapping({"strde": 3})
    with pytest.raises(ConfigError, match="stride 300 is larger than the crop"):
        TilingParameters.from_mapping({"crop": 256, "stride": 300})
    with pytest.raises(ConfigError, match="unknown blend 'cosin'.*'cosine'"):
        TilingParameters.from_mapping({"blend": "cosin"})


def test_model_output_of_the_wrong_size_is_explained():
    with pytest.raises(InferenceError, match=r"shape \(2, 1, 16, 16\) for chips of 64x64"):
        tiled_inference(lambda t: t[:, :1, ::4, ::4], torch.randn(1, 3, 100, 100), crop=64, stride=48, batch_size=2)
