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


@pytest.fixture
def boxes(tmp_path):
    """Sen1Floods11-like chips whose label is exactly a dark box in S1 VV."""
    config = sen1floods11_config(tmp_path)
    for s1 in (tmp_path / "data").rglob("*_S1Hand.tif"):
        label = next((tmp_path / "data").rglob(s1.name.replace("_S1Hand", "_LabelHand")))
        with rasterio.open(s1, "r+") as dst:
            vv = np.full((dst.height, dst.width), -10.0, np.float32)
            vv[10:40, 5:30] = -25.0
            dst.write(np.stack([vv, vv - 6]))
        with rasterio.open(label, "r+") as dst:
            mask = np.zeros((dst.height, dst.width), dst.dtypes[0])
            mask[10:40, 5:30] = 1
            dst.write(mask[None])
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
