"""Multi-temporal inputs: bands-as-time files read as [C, T, H, W] with an explicit layout, and TerraTorch's
backbone_use_temporal / backbone_temporal_pooling / backbone_temporal_n_timestamps."""

from __future__ import annotations

import json

import pytest
import rasterio
import torch
import yaml

from cli_configs import FAST_TRAINER, TINY_MODEL_ARGS
from terramind_ft.cli import main
from terramind_ft.data import GenericMultiModalDataModule
from terramind_ft.data.synthetic import make_time_series
from terramind_ft.errors import ConfigError
from terramind_ft.models.factory import build_model
from terramind_ft.models.temporal import TemporalEncoder
from terramind_ft.registry import BACKBONE_REGISTRY

BANDS = ["BLUE", "GREEN", "RED", "NIR_NARROW", "SWIR_1", "SWIR_2"]
DATES, SIZE = 3, 64


def _series(folder, n=8, layout="time_major"):
    return make_time_series(folder, n=n, dates=DATES, bands=len(BANDS), size=SIZE, layout=layout)


def _data_kwargs(folder, **extra):
    kwargs = {"modalities": ["S2L2A"], "task": "segmentation", "batch_size": 2, "num_classes": 2,
              "data_root": str(folder), "label_data_root": str(folder), "train_split": str(folder / "train.txt"),
              "val_split": str(folder / "val.txt"), "test_split": str(folder / "test.txt"),
              "image_grep": "*_merged.tif", "label_grep": "*.mask.tif", "dataset_bands": {"S2L2A": BANDS},
              "means": {"S2L2A": [0.0] * 6}, "stds": {"S2L2A": [1.0] * 6}, "time_steps": {"S2L2A": DATES}}
    return {**kwargs, **extra}


@pytest.mark.parametrize("layout", ["time_major", "band_major"])
def test_bands_as_time_read_as_c_t_h_w_in_the_declared_layout(tmp_path, layout):
    folder = _series(tmp_path / layout, n=8, layout=layout)
    dm = GenericMultiModalDataModule(**_data_kwargs(folder, time_layout=layout))
    x = dm.make_dataset("train")[0]["image"]["S2L2A"]
    assert tuple(x.shape) == (6, DATES, SIZE, SIZE)
    centre = x.mean(dim=(-2, -1)).round()  # 1000 * (date + 1) + 10 * band (+0.5)
    expected = torch.tensor([[1000 * (t + 1) + 10 * c for t in range(DATES)] for c in range(6)], dtype=x.dtype)
    torch.testing.assert_close(centre, expected, atol=1.0, rtol=0)
    # read with the other layout, the values would come out scrambled: the layout is not guessed
    other = "band_major" if layout == "time_major" else "time_major"
    wrong = GenericMultiModalDataModule(**_data_kwargs(folder, time_layout=other)).make_dataset("train")[0]
    assert not torch.allclose(wrong["image"]["S2L2A"].mean(dim=(-2, -1)).round(), expected, atol=1.0)


def test_output_bands_select_the_same_bands_at_every_date(tmp_path):
    folder = _series(tmp_path / "d")
    dm = GenericMultiModalDataModule(**_data_kwargs(folder, time_layout="time_major",
                                                    output_bands={"S2L2A": ["RED", "BLUE"]},
                                                    means={"S2L2A": [0.0, 0.0]}, stds={"S2L2A": [1.0, 1.0]}))
    x = dm.make_dataset("train")[0]["image"]["S2L2A"]
    centre = x.mean(dim=(-2, -1)).round()
    expected = torch.tensor([[1000 * (t + 1) + 10 * c for t in range(DATES)] for c in (2, 0)], dtype=x.dtype)
    torch.testing.assert_close(centre, expected, atol=1.0, rtol=0)


def test_time_steps_need_an_explicit_layout(tmp_path):
    folder = _series(tmp_path / "d", n=8)
    with pytest.raises(ConfigError, match=r"time_layout.*'time_major'.*'band_major'"):
        GenericMultiModalDataModule(**_data_kwargs(folder))


def test_one_random_draw_for_every_date(tmp_path):
    folder = _series(tmp_path / "d")
    dm = GenericMultiModalDataModule(**_data_kwargs(folder, time_layout="time_major", train_transform=["d4"]))
    raw = dm.make_dataset("train", transform=None)
    for seed in range(6):
        torch.manual_seed(seed)
        sample = dm.make_dataset("train")[0]["image"]["S2L2A"]
        plain = raw[0]["image"]["S2L2A"]
        # the same flip/rotation at every date: date t of the sample is date 0's transform applied to date t
        offsets = sample - sample[:, :1]
        expected = (plain - plain[:, :1])
        matches = [torch.allclose(offsets, torch.rot90(expected, k, dims=(-2, -1)).flip(-1) if f else
                                  torch.rot90(expected, k, dims=(-2, -1)), atol=1e-4)
                   for k in range(4) for f in (False, True)]
        assert any(matches)


def test_temporal_encoder_pools_the_dates_of_the_backbone():
    torch.manual_seed(0)
    backbone = BACKBONE_REGISTRY.get("terramind_v1_tiny")(modalities=["S2L2A", "DEM"]).eval()
    s2 = torch.randn(2, 12, 3, 32, 32)
    dem = torch.randn(2, 1, 32, 32)  # one date only: the same at every date
    with torch.no_grad():
        per_date = [backbone({"S2L2A": s2[:, :, t], "DEM": dem}) for t in range(3)]
        for pooling, expect in (("mean", lambda f: torch.stack(f).mean(0)), ("max", lambda f: torch.stack(f).amax(0)),
                                ("concat", lambda f: torch.cat(f, dim=-1))):
            out = TemporalEncoder(backbone, pooling, n_timestamps=3)({"S2L2A": s2, "DEM": dem})
            assert out.grid == per_date[0].grid
            for level in (0, 11):
                torch.testing.assert_close(out[level], expect([d[level] for d in per_date]), atol=1e-4, rtol=1e-4)
        diff = TemporalEncoder(backbone, "diff", n_timestamps=2)({"S2L2A": s2[:, :, :2], "DEM": dem})
        torch.testing.assert_close(diff[5], per_date[1][5] - per_date[0][5], atol=1e-4, rtol=1e-4)
    assert TemporalEncoder(backbone, "concat", n_timestamps=3).out_channels == [3 * c for c in backbone.out_channels]
    with pytest.raises(ValueError, match="2 dates, backbone_temporal_n_timestamps says 3"):
        TemporalEncoder(backbone, "mean", n_timestamps=3)({"S2L2A": s2[:, :, :2], "DEM": dem})
    with pytest.raises(ConfigError, match="concat pooling needs the number of dates"):
        TemporalEncoder(backbone, "concat")


def test_model_args_build_the_wrapper():
    args = dict(TINY_MODEL_ARGS, backbone_modalities=["S2L2A"], backbone_use_temporal=True,
                backbone_temporal_pooling="concat", backbone_temporal_n_timestamps=3)
    model = build_model("segmentation", args)
    assert isinstance(model.encoder, TemporalEncoder)
    out = model.eval()({"S2L2A": torch.randn(1, 12, 3, 48, 48)}).output
    assert out.shape == (1, 2, 48, 48)
    with pytest.raises(ConfigError, match="unknown temporal pooling 'avg'"):
        build_model("segmentation", {**args, "backbone_temporal_pooling": "avg"})


def test_multitemporal_fit_test_predict_on_the_cli(tmp_path):
    folder = _series(tmp_path / "crops")
    model_args = dict(TINY_MODEL_ARGS, backbone_modalities=["S2L2A"], backbone_bands={"S2L2A": BANDS},
                      backbone_use_temporal=True, backbone_temporal_pooling="mean",
                      backbone_temporal_n_timestamps=DATES)
    data = _data_kwargs(folder, time_layout="time_major", means={"S2L2A": [2000.0 + 10 * c for c in range(6)]},
                        stds={"S2L2A": [800.0] * 6}, predict_data_root=str(folder), train_transform=["d4"])
    config = {"seed_everything": 0, "trainer": {**FAST_TRAINER, "default_root_dir": str(tmp_path / "run")},
              "data": {"class_path": "GenericMultiModalDataModule", "init_args": data},
              "model": {"class_path": "SemanticSegmentationTask",
                        "init_args": {"model_args": model_args, "plot_on_val": 1}}}
    cfg = tmp_path / "crops.yaml"
    cfg.write_text(yaml.safe_dump(config, sort_keys=False))
    assert main(["check", "--config", str(cfg)]) == 0
    assert main(["fit", "--config", str(cfg)]) == 0
    assert (tmp_path / "run" / "previews" / "epoch000_0.png").is_file()
    assert main(["test", "--config", str(cfg), "--ckpt_path", "best"]) == 0
    out = tmp_path / "pred"
    assert main(["predict", "--config", str(cfg), "--ckpt_path", "best", "--predict_output_dir", str(out)]) == 0
    manifest = json.loads((out / "predictions.json").read_text())
    assert len(manifest) == 8
    with rasterio.open(next(out.glob("*_pred.tif"))) as src:
        assert src.shape == (SIZE, SIZE) and src.crs.to_epsg() == 32633
