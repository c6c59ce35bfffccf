"""Labels that would silently mislead: a split with no valid pixel, classes out of range."""

from __future__ import annotations

import math

import numpy as np
import rasterio
import torch

from cli_configs import sen1floods11_config, write
from terramind_ft.cli import main
from terramind_ft.tasks.metrics import ClassificationMetrics, RegressionMetrics, SegmentationMetrics


def _rewrite_labels(config, split, value):
    data = config["data"]["init_args"]
    folder = data[f"{split}_label_data_root"]
    from pathlib import Path

    names = [line.strip() for line in Path(data[f"{split}_split"]).read_text().splitlines() if line.strip()] \
        if data.get(f"{split}_split") else None
    for path in Path(folder).glob("*.tif"):
        if names is not None and not any(path.name.startswith(n) for n in names):
            continue
        with rasterio.open(path, "r+") as dst:
            dst.write(np.full((dst.height, dst.width), value, dtype=dst.dtypes[0]), 1)


def test_metrics_over_no_valid_pixel_are_nan_not_zero():
    seg = SegmentationMetrics(2, ignore_index=-1, class_names=["a", "b"])
    seg.update(torch.zeros(2, 8, 8, dtype=torch.long), torch.full((2, 8, 8), -1))
    values = seg.compute()
    assert math.isnan(values["mIoU"]) and math.isnan(values["Pixel_Accuracy"]) and math.isnan(values["mIoU_Micro"])
    cls = ClassificationMetrics(3, ignore_index=-1, class_names=["a", "b", "c"])
    cls.update(torch.zeros(4, dtype=torch.long), torch.full((4,), -1))
    assert math.isnan(cls.compute()["Accuracy_Micro"])
    reg = RegressionMetrics(ignore_index=-1)
    reg.update(torch.zeros(2, 4, 4), torch.full((2, 4, 4), -1.0))
    assert math.isnan(reg.compute()["RMSE"])


def test_a_validation_split_of_ignored_labels_warns_and_never_wins(tmp_path, recwarn):
    config = sen1floods11_config(tmp_path)
    _rewrite_labels(config, "val", -1)
    cfg = write(config, tmp_path / "c.yaml")
    assert main(["fit", "--config", cfg]) == 0
    assert any("no valid label pixel" in str(w.message) for w in recwarn.list)
    metrics = open(next((tmp_path / "run").glob("lightning_logs/version_*/metrics.csv"))).read().splitlines()
    header = metrics[0].split(",")
    row = next(line.split(",") for line in metrics[1:] if line.split(",")[header.index("val/mIoU")] != "")
    assert row[header.index("val/mIoU")] == "nan" and row[header.index("val/loss")] == "nan"  # was 0 and 0


def test_check_reports_label_classes_out_of_range(tmp_path, capsys):
    config = sen1floods11_config(tmp_path)
    _rewrite_labels(config, "test", 7)  # num_classes 2: found at the first test batch before
    cfg = write(config, tmp_path / "c.yaml")
    assert main(["check", "--config", cfg]) == 1
    out = capsys.readouterr().out
    assert "FAILED" in out and "test split: 2 label files hold classes outside [0, 1]" in out and "[7]" in out
