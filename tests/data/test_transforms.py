"""Joint transforms: one random draw for every modality, the mask and the nodata masks; schema and mapping."""

from __future__ import annotations

import pytest
import torch

from terramind_ft.data.transforms import (
    D4, CenterCrop, Compose, Flip, RandomCrop, Resize, Rot90, TransformNotice, Transpose, build_transform,
)
from terramind_ft.errors import ConfigError


def _sample(h=8, w=8):
    """Modalities whose every band, the mask and the nodata mask are the same position code (r * w + c)."""
    code = torch.arange(h * w, dtype=torch.float32).reshape(h, w)
    return {
        "image/S2L1C": code.expand(3, h, w).clone(),
        "image/S1GRD": (code * 2).expand(2, h, w).clone(),
        "mask": code.long()[None],
        "nodata/S1GRD": (code.long() % 3 == 0)[None],
    }


def _consistent(out):
    ref = out["image/S2L1C"][0]
    assert torch.equal(out["image/S2L1C"][1], ref) and torch.equal(out["image/S1GRD"][0], ref * 2)
    assert torch.equal(out["mask"][0], ref.long())
    assert torch.equal(out["nodata/S1GRD"][0], ref.long() % 3 == 0)
    return ref


@pytest.mark.parametrize("transform", [D4(), Flip(-1, 1.0), Flip(-2, 1.0), Rot90(), Transpose(1.0)])
def test_geometric_transforms_move_all_targets_together(transform):
    seen = set()
    for _ in range(40):
        ref = _consistent(transform(_sample(), frozenset({"mask", "nodata/S1GRD"})))
        seen.add(tuple(ref.flatten().tolist()))
    expected = {D4: 8, Flip: 1, Rot90: 3, Transpose: 1}[type(transform)]
    assert len(seen) == expected  # D4 reaches all 8 group elements, rot90 the 3 non-trivial rotations


def test_probability_zero_is_identity_and_d4_keeps_non_square_shapes():
    sample = _sample()
    assert torch.equal(Flip(-1, 0.0)(sample)["mask"], sample["mask"])
    for _ in range(20):
        out = D4()(_sample(4, 6))
        assert out["mask"].shape == (1, 4, 6)
        _consistent(out)
        assert Rot90()(_sample(4, 6))["mask"].shape == (1, 4, 6)
        assert Transpose(1.0)(_sample(4, 6))["mask"].shape == (1, 4, 6)


def test_random_crop_is_shared_and_covers_positions():
    tops = set()
    for _ in range(30):
        out = RandomCrop((3, 4))(_sample())
        ref = _consistent(out)
        assert ref.shape == (3, 4)
        tops.add(int(ref[0, 0]))
    assert len(tops) > 5


def test_center_crop_and_resize():
    out = CenterCrop((4, 4))(_sample())
    assert _consistent(out)[0, 0] == 2 * 8 + 2
    sample = _sample()
    sample["mask"] = (sample["mask"] % 2)  # two classes: nearest-neighbour must not invent a third
    out = Resize((16, 12))(sample, frozenset({"mask", "nodata/S1GRD"}))
    assert out["image/S2L1C"].shape == (3, 16, 12) and out["image/S2L1C"].dtype == torch.float32
    assert out["mask"].dtype == torch.int64 and set(out["mask"].unique().tolist()) <= {0, 1}
    assert out["nodata/S1GRD"].dtype == torch.bool


def test_crop_larger_than_input_is_a_config_error():
    with pytest.raises(ConfigError, match="random_crop to 224x224 but the rasters are 64x64") as err:
        build_transform([{"random_crop": 224}], key="data.init_args.train_transform").check_input(
            64, 64, key="data.init_args.train_transform")
    assert err.value.key == "data.init_args.train_transform"


def test_our_schema_forms():
    t = build_transform(["d4", "hflip", {"vflip": {"p": 0.2}}, {"random_crop": [32, 48]}, {"center_crop": 16},
                        {"resize": {"size": 8}}, {"rot90": None}], key="k")
    assert repr(t) == ("[d4(p=1.0), hflip(p=0.5), vflip(p=0.2), random_crop(size=[32, 48]), "
                       "center_crop(size=[16, 16]), resize(size=[8, 8]), rot90(p=1.0)]")
    assert t.changes_grid and t.output_size(64, 64) == (8, 8)
    assert not build_transform(["d4"], key="k").changes_grid
    assert len(build_transform(None, key="k")) == 0


def test_terratorch_albumentations_entries_are_mapped_with_a_notice():
    spec = [{"class_path": "albumentations.D4"},
            {"class_path": "albumentations.HorizontalFlip", "init_args": {"p": 0.3}},
            {"class_path": "albumentations.RandomCrop", "init_args": {"height": 224, "width": 200}},
            {"class_path": "albumentations.pytorch.transforms.ToTensorV2"}, "albumentations.VerticalFlip"]
    with pytest.warns(TransformNotice, match=r"train_transform\[2\]: albumentations.RandomCrop -> terramind-ft "
                                             r"transform 'random_crop: \[224, 200\]'"):
        t = build_transform(spec, key="data.init_args.train_transform")
    assert repr(t) == "[d4(p=1.0), hflip(p=0.3), random_crop(size=[224, 200]), vflip(p=0.5)]"


@pytest.mark.parametrize("spec, message", [
    (["centre_crop"], "unknown transform 'centre_crop'. Did you mean 'center_crop'"),
    ([{"random_crop": None}], "random_crop needs a size"),
    ([{"random_crop": 0}], "positive int"),
    ([{"hflip": {"q": 1}}], r"hflip does not take \['q'\]"),
    ([{"hflip": {"p": 2}}], r"p must be a number in \[0, 1\]"),
    ([{"hflip": 0.5}], "takes a mapping of arguments"),
    ([{"d4": {}, "hflip": {}}], "each transform is one name"),
    ([{"class_path": "albumentations.GaussNoise"}], "albumentations.GaussNoise' is not supported"),
    ([{"class_path": "albumentations.RandomCrop", "init_args": {"height": 8}}], "needs init_args height and width"),
    ([{"class_path": "albumentations.HorizontalFlip", "init_args": {"p": 0.5, "interpolation": 1}}],
     r"does not take \['interpolation'\]"),
    ([3], "a transform is a name or a one-key mapping"),
])
def test_bad_entries_name_the_list_position(spec, message):
    with pytest.raises(ConfigError, match=message) as err:
        build_transform(spec, key="data.init_args.val_transform")
    assert err.value.key == "data.init_args.val_transform[0]"


def test_compose_runs_in_order():
    t = Compose([CenterCrop((4, 4)), Resize((2, 2))])
    assert t(_sample())["mask"].shape == (1, 2, 2)
