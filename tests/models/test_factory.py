"""Model assembly from TerraTorch-style model_args: routing of prefixed args, padding/crop, typo guard."""

from __future__ import annotations

import pytest
import torch

from fake_backbone import register
from terramind_ft.errors import ConfigError
from terramind_ft.models.factory import EncoderDecoderFactory, build_model

register()

SEG_ARGS = {
    "backbone": "fake_vit", "backbone_modalities": ["S2L1C", "S1GRD"], "backbone_in_chans": {"S2L1C": 3, "S1GRD": 2},
    "backbone_dim": 32,
    "necks": [{"name": "SelectIndices", "indices": [0, 1, 2, 3]}, {"name": "ReshapeTokensToImage"},
              {"name": "LearnedInterpolateToPyramidal"}],
    "decoder": "UNetDecoder", "decoder_channels": [32, 16, 8, 8], "head_dropout": 0.1, "num_classes": 3,
}


def batch(h=64, w=64, b=2):
    return {"S2L1C": torch.randn(b, 3, h, w), "S1GRD": torch.randn(b, 2, h, w)}


@pytest.mark.parametrize("size", [(64, 64), (50, 70), (17, 33)])
def test_segmentation_output_matches_any_input_size(size):
    model = build_model("segmentation", SEG_ARGS)
    out = model(batch(*size)).output
    assert out.shape == (2, 3, *size)


def test_padding_is_cropped_away_not_shifted():
    """Inputs are padded to an even token grid (a multiple of 32 px), split between both sides as TerraTorch
    does; the output is cropped at the same offsets, so it lines up with the input pixel for pixel."""
    args = {**SEG_ARGS, "decoder": "IdentityDecoder", "necks": [{"name": "SelectIndices", "indices": [-1]},
                                                                {"name": "ReshapeTokensToImage"}]}
    args.pop("decoder_channels")
    model = build_model("segmentation", args).eval()
    assert model.padding_for((60, 64)) == (2, 2, 0, 0) and model.padding_for((64, 48)) == (0, 0, 8, 8)
    assert model.padding_for((64, 47)) == (0, 0, 8, 9)  # the odd pixel goes to the bottom/right
    x = {k: v[..., :60, :64] for k, v in batch(64, 64, b=1).items()}
    cut = model(x).output
    assert cut.shape[-2:] == (60, 64)
    padded = {k: torch.nn.functional.pad(v, (0, 0, 2, 2), mode="reflect") for k, v in x.items()}
    torch.testing.assert_close(cut, model(padded).output[..., 2:62, :])


def test_prefixed_args_reach_their_modules():
    model = build_model("segmentation", {**SEG_ARGS, "head_channel_list": [12]})
    assert model.encoder.out_channels == [32] * 4
    assert model.decoder.out_channels == 8
    convs = [m for m in model.head.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [12, 3]


@pytest.mark.parametrize("bad_key,match", [
    ("decoder_channel", r"model_args\.decoder_channel: .*Did you mean 'decoder_channels'"),
    ("head_dropuot", r"model_args\.head_dropuot: .*Did you mean 'head_dropout'"),
    ("backbone_modalites", r"model_args\.backbone_modalites: .*Did you mean 'backbone_modalities'"),
    ("num_class", r"model_args\.num_class: .*Did you mean 'num_classes'"),
    ("aux_decoder", r"model_args\.aux_decoder: .*Did you mean 'aux_decoders'"),
])
def test_unused_or_misspelt_argument_is_an_error_naming_it(bad_key, match):
    args = dict(SEG_ARGS)
    if bad_key == "decoder_channel":
        args["decoder_channel"] = args.pop("decoder_channels")
    else:
        args[bad_key] = 1
    with pytest.raises(ConfigError, match=match):
        build_model("segmentation", args)


def test_unknown_names_suggest_registered_ones():
    with pytest.raises(ConfigError, match=r"model_args\.decoder: unknown decoder 'UnetDecoder'.*'UNetDecoder'"):
        build_model("segmentation", {**SEG_ARGS, "decoder": "UnetDecoder"})
    with pytest.raises(ConfigError, match=r"model_args\.backbone: unknown backbone"):
        build_model("segmentation", {**SEG_ARGS, "backbone": "fake_vitt"})
    with pytest.raises(ConfigError, match="num_classes"):
        build_model("segmentation", {k: v for k, v in SEG_ARGS.items() if k != "num_classes"})


def test_classification_and_regression_heads():
    cls_args = {"backbone": "fake_vit", "backbone_modalities": ["S2L1C"], "backbone_in_chans": {"S2L1C": 3},
                "necks": [{"name": "AggregateTokens", "pooling": "mean"}], "decoder": "IdentityDecoder",
                "head_dim_list": [16], "num_classes": 5}
    model = EncoderDecoderFactory().build_model("classification", **cls_args)
    assert model({"S2L1C": torch.randn(2, 3, 40, 48)}).output.shape == (2, 5)
    reg_args = {**SEG_ARGS, "head_final_act": "relu"}
    reg_args.pop("num_classes")
    reg_args.pop("head_dropout")
    out = build_model("regression", reg_args)(batch(48, 40)).output
    assert out.shape == (2, 48, 40) and (out >= 0).all()
    with pytest.raises(ConfigError, match="head_final_act"):
        build_model("regression", {**reg_args, "head_final_act": "relux"})


def test_freezing():
    model = build_model("segmentation", SEG_ARGS)
    model.freeze_encoder()
    model.freeze_decoder()
    assert not any(p.requires_grad for p in model.encoder.parameters())
    assert not any(p.requires_grad for p in model.decoder.parameters())
    assert all(p.requires_grad for p in model.head.parameters())


def test_decoder_kwargs_and_head_kwargs_are_terratorchs_dict_forms():
    args = {k: v for k, v in SEG_ARGS.items() if not k.startswith(("decoder_", "head_"))}
    prefixed = build_model("segmentation", dict(SEG_ARGS))
    as_dicts = build_model("segmentation", {**args,
                                            "decoder_kwargs": {k[len("decoder_"):]: v for k, v in SEG_ARGS.items()
                                                               if k.startswith("decoder_")},
                                            "head_kwargs": {k[len("head_"):]: v for k, v in SEG_ARGS.items()
                                                            if k.startswith("head_")}})
    assert prefixed.state_dict().keys() == as_dicts.state_dict().keys()


def test_temporal_keys_without_use_temporal_are_refused():
    with pytest.raises(ConfigError, match=r"backbone_temporal_pooling without backbone_use_temporal"):
        build_model("segmentation", {**SEG_ARGS, "backbone_temporal_pooling": "mean"})


LAST_MAP = [{"name": "SelectIndices", "indices": [-1]}, {"name": "ReshapeTokensToImage"}]


def test_linear_decoder_is_its_own_head_for_a_linear_probe():
    args = {**{k: v for k, v in SEG_ARGS.items() if not k.startswith(("decoder", "head_"))}, "necks": LAST_MAP,
            "decoder": "LinearDecoder", "decoder_upsampling_size": 16}
    model = build_model("segmentation", args)
    assert isinstance(model.head, torch.nn.Identity)
    assert [k for k in model.state_dict() if not k.startswith("encoder.")] == ["decoder.conv.weight",
                                                                                 "decoder.conv.bias"]
    assert model(batch(40, 56)).output.shape == (2, 3, 40, 56)
    reg = {k: v for k, v in args.items() if k != "num_classes"}
    assert build_model("regression", reg)(batch(32, 48)).output.shape == (2, 32, 48)
    with pytest.raises(ConfigError, match="LinearDecoder is its own head: remove head_dropout") as err:
        build_model("segmentation", {**args, "head_dropout": 0.1})
    assert err.value.key.endswith("model_args.head_dropout")
    with pytest.raises(ConfigError, match="classification model takes IdentityDecoder or MLPDecoder"):
        build_model("classification", {**args, "necks": LAST_MAP})


def test_linear_decoder_with_decoder_num_classes_feeds_the_head_as_terratorch_builds_it():
    args = {**{k: v for k, v in SEG_ARGS.items() if not k.startswith(("decoder", "head_"))}, "necks": LAST_MAP,
            "decoder": "LinearDecoder", "decoder_upsampling_size": 16, "decoder_num_classes": 6}
    with pytest.warns(UserWarning, match="decoder_num_classes=6: LinearDecoder's maps feed the SegmentationHead"):
        model = build_model("segmentation", args)
    assert model.decoder.out_channels == 6 and model.head.head[-1].out_channels == 3
