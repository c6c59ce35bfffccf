"""terramind-ft zero-shot: generated land cover -> water maps -> the test metrics, on a constructed case with a
known answer (a stand-in generator that calls the dark S1 box water), then end to end with random weights."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
import torch

from cli_configs import sen1floods11_config, write
from terramind_ft.cli import main
from terramind_ft.inference.geotiff import WEIGHTS_TAG
from terramind_ft.modalities import LULC_CLASSES
from terramind_ft.registry import FULL_MODEL_REGISTRY


class BoxIsWater(torch.nn.Module):
    """LULC probabilities: 'water' where S1 VV is below the chip's midpoint, 'trees' elsewhere."""

    def forward(self, x):
        vv = x["S1GRD"][:, 0]
        mid = (vv.amax(dim=(1, 2), keepdim=True) + vv.amin(dim=(1, 2), keepdim=True)) / 2
        probs = torch.zeros(vv.shape[0], len(LULC_CLASSES), *vv.shape[1:])
        probs[:, LULC_CLASSES.index("water")] = (vv < mid).float()
        probs[:, LULC_CLASSES.index("trees")] = (vv >= mid).float()
        return {"LULC": probs}


def _paint_boxes(root, box):
    """Make every label exactly a dark box in S1 VV."""
    for s1 in root.rglob("*_S1Hand.tif"):
        label = next(root.rglob(s1.name.replace("_S1Hand", "_LabelHand")))
        with rasterio.open(s1, "r+") as dst:
            vv = np.full((dst.height, dst.width), -10.0, np.float32)
            vv[box] = -25.0
            dst.write(np.stack([vv, vv - 6]))
        with rasterio.open(label, "r+") as dst:
            mask = np.zeros((dst.height, dst.width), dst.dtypes[0])
            mask[box] = 1
            dst.write(mask[None])


@pytest.fixture
def boxes(tmp_path):
    """Sen1Floods11-like chips whose label is exactly a dark box in S1 VV."""
    config = sen1floods11_config(tmp_path)
    _paint_boxes(tmp_path / "data", np.s_[10:40, 5:30])
    return config


def test_known_answer_and_the_water_class_mapping(tmp_path, boxes, monkeypatch):
    monkeypatch.setattr(FULL_MODEL_REGISTRY, "build", lambda *a, **k: BoxIsWater())
    cfg = write(boxes, tmp_path / "z.yaml")
    out = tmp_path / "zs"
    assert main(["zero-shot", "--config", cfg, "--output", str(out)]) == 0
    doc = json.loads((out / "metrics.json").read_text())
    assert doc["metrics"]["test/IoU_Flood"] == pytest.approx(1.0) and doc["metrics"]["test/mIoU"] == pytest.approx(1.0)
    maps = sorted(out.glob("*_water.tif"))
    assert len(maps) == 2
    with rasterio.open(maps[0]) as dst:
        assert dst.tags()[WEIGHTS_TAG] == "pretrained" and dst.read(1)[10:40, 5:30].min() == 1
    # calling the trees water instead inverts the map: the flood IoU falls to 0
    assert main(["zero-shot", "--config", cfg, "--output", str(out), "--water-classes", "trees"]) == 0
    assert json.loads((out / "metrics.json").read_text())["metrics"]["test/IoU_Flood"] == pytest.approx(0.0)


def test_random_weights_need_consent_and_are_tagged(tmp_path, capsys):
    cfg = write(sen1floods11_config(tmp_path), tmp_path / "z.yaml")
    assert main(["zero-shot", "--config", cfg, "--no-pretrained"]) == 2
    assert "--allow-random-weights" in capsys.readouterr().err
    out = tmp_path / "zs"
    assert main(["zero-shot", "--config", cfg, "--no-pretrained", "--allow-random-weights", "--output", str(out),
                 "--water-classes", "water", "flooded_vegetation"]) == 0
    doc = json.loads((out / "metrics.json").read_text())
    assert doc["zero_shot"]["weights"] == "random" and doc["zero_shot"]["size"] == "tiny"
    assert doc["zero_shot"]["water_classes"] == ["water", "flooded_vegetation"]
    assert 0.0 <= doc["metrics"]["test/IoU_Flood"] <= 1.0
    with rasterio.open(next(out.glob("*_water.tif"))) as dst:
        assert dst.tags()[WEIGHTS_TAG] == "random"


def test_large_scenes_stream_and_score_strip_by_strip(tmp_path, monkeypatch):
    """--tile 64 on 320 x 96 px scenes: streamed through predict_scene (never more rows in flight than a chip),
    the map written as it goes and scored strip by strip: the known answer holds across chip seams."""
    from terramind_ft.data.synthetic import make_sen1floods11
    from terramind_ft.inference import scene as scene_module

    config = sen1floods11_config(tmp_path)
    big = make_sen1floods11(tmp_path / "big", size=96, splits={"train": 1, "val": 1, "test": 2})
    for path in (tmp_path / "big").rglob("*.tif"):  # make the scenes tall: 320 rows
        with rasterio.open(path) as src:
            data, profile = src.read(), src.profile
        profile.update(height=320)
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(np.concatenate([data] * 4, axis=1)[:, :320])
    _paint_boxes(tmp_path / "big", np.s_[150:190, 40:70])  # across the seams of 64 px chips
    config["data"]["init_args"] = big.datamodule_kwargs()
    cfg = write(config, tmp_path / "big.yaml")
    monkeypatch.setattr(FULL_MODEL_REGISTRY, "build", lambda *a, **k: BoxIsWater())
    results = []
    original = scene_module.predict_scene

    def spy(*args, **kwargs):
        results.append(original(*args, **kwargs))
        return results[-1]

    monkeypatch.setattr(scene_module, "predict_scene", spy)
    out = tmp_path / "zs"
    assert main(["zero-shot", "--config", cfg, "--output", str(out), "--tile", "64"]) == 0
    assert len(results) == 2 and all(r.height == 320 and r.max_rows_in_flight <= 64 for r in results)
    doc = json.loads((out / "metrics.json").read_text())
    assert doc["zero_shot"]["chips"] == 2
    assert doc["metrics"]["test/IoU_Flood"] == pytest.approx(1.0)
    with rasterio.open(results[0].output_path) as dst:
        water = dst.read(1)
        assert dst.shape == (320, 96) and (water[150:190, 40:70] == 1).all()
        assert set(np.unique(water[:140]).tolist()) <= {0, 255}
