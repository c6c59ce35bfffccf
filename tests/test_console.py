"""The console says what matters, once: no third-party messages a user cannot act on; notices without library
paths; a logger whose package is missing names the extra to install."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from cli_configs import sen1floods11_config, write
from terramind_ft.cli import main

pytestmark = pytest.mark.slow


def test_a_fit_prints_no_unactionable_third_party_lines(tmp_path):
    config = sen1floods11_config(tmp_path)
    config["trainer"]["logger"] = True
    config["data"]["init_args"]["train_transform"] = [{"class_path": "albumentations.D4"}]  # a mapped transform
    cfg = write(config, tmp_path / "c.yaml")
    result = subprocess.run([sys.executable, "-m", "terramind_ft.cli", "fit", "--config", cfg], cwd=tmp_path,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    console = result.stdout + result.stderr
    for noise in ("LeafSpec", "tensorboardX", "💡 Tip", "will be overridden by `TerraMindCLI", "lightning/pytorch/cli.py"):
        assert noise not in console, noise
    assert "notice: data.init_args.train_transform[0]: albumentations.D4" in console  # said plainly, once
    assert console.count("albumentations.D4 ->") == 1
    assert "terramind-ft[tensorboard]" in console  # what to install for TensorBoard, instead of Lightning's note
    assert "fit done:" in console and "best val/mIoU" in console  # the closing line
    # random weights: the closing note says what pretrained weights give and how to get them
    assert "started from random weights" in console and "mIoU 0.906" in console
    assert "backbone_pretrained: true" in console and "ibm-esa-geospatial/TerraMind-1.0-tiny" in console


def test_no_random_weight_note_when_the_backbone_starts_from_a_file(tmp_path, capsys):
    import torch

    from terramind_ft.registry import BACKBONE_REGISTRY

    weights = tmp_path / "tiny.pt"
    torch.save(BACKBONE_REGISTRY.get("terramind_v1_tiny")(modalities=["S2L1C", "S1GRD"]).state_dict(), weights)
    config = sen1floods11_config(tmp_path)
    config["model"]["init_args"]["model_args"]["backbone_ckpt_path"] = str(weights)
    assert main(["fit", "--config", write(config, tmp_path / "c.yaml")]) == 0
    err = capsys.readouterr().err
    assert "fit done:" in err and "random weights" not in err


def test_a_logger_whose_package_is_missing_names_the_extra(tmp_path, capsys):
    try:
        import tensorboard  # noqa: F401
        pytest.skip("tensorboard is installed here")
    except ImportError:
        pass
    config = sen1floods11_config(tmp_path)
    config["trainer"]["logger"] = {"class_path": "TensorBoardLogger", "init_args": {"save_dir": str(tmp_path)}}
    assert main(["fit", "--config", write(config, tmp_path / "c.yaml")]) == 2
    err = capsys.readouterr().err
    assert "trainer.logger.class_path" in err and "pip install 'terramind-ft[tensorboard]'" in err
    assert not (tmp_path / "run").exists()


def test_the_progress_bar_shows_the_monitored_metric(tmp_path):
    from terramind_ft.cli.app import build_cli

    config = sen1floods11_config(tmp_path)
    cli = build_cli(["fit", "--config", write(config, tmp_path / "c.yaml")], run=False)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    assert "val/mIoU" in cli.trainer.progress_bar_metrics and "val/loss" in cli.trainer.progress_bar_metrics


def test_the_random_weight_note_quotes_the_flood_figure_for_segmentation_only():
    """A flood mIoU is no yardstick for a classification score: that note names no number."""
    from terramind_ft.cli.app import random_start_note
    from terramind_ft.tasks import ClassificationTask

    task = ClassificationTask(model_args={
        "backbone": "terramind_v1_tiny", "backbone_pretrained": False, "backbone_modalities": ["S2L2A"],
        "necks": [{"name": "AggregateTokens", "pooling": "mean"}], "decoder": "IdentityDecoder", "num_classes": 3})
    note = random_start_note(task)
    assert note is not None and "started from random weights" in note and "backbone_pretrained: true" in note
    assert "0.906" not in note and "Sen1Floods11" not in note


def test_a_torchvision_built_for_another_torch_is_an_install_error_with_the_fix(tmp_path):
    """PyPI's torchvision is a CUDA build: next to PyTorch's CPU torch its first import (by Lightning, through
    torchmetrics) raises "operator torchvision::nms does not exist". Here a torchvision that raises that on import
    stands in for it, first on the path, as a user's broken environment has it."""
    fake = tmp_path / "site" / "torchvision"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text('raise RuntimeError("operator torchvision::nms does not exist")\n')
    config = write(sen1floods11_config(tmp_path), tmp_path / "c.yaml")
    env = {**os.environ, "PYTHONPATH": str(fake.parent)}
    result = subprocess.run([sys.executable, "-m", "terramind_ft.cli", "fit", "--config", config], cwd=tmp_path,
                            capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 7, result.stderr[-2000:]
    assert "terramind-ft: install error: torchvision" in result.stderr
    assert "does not work with torch" in result.stderr
    assert "pip install --force-reinstall torch torchvision --index-url https://download.pytorch.org/whl/cpu" \
        in result.stderr
    assert "Traceback" not in result.stderr


def test_other_runtime_errors_stay_unexpected_errors():
    from terramind_ft.cli.report import format_error

    assert format_error(RuntimeError("operator foo::bar does not exist")) == (
        "terramind-ft: unexpected error: RuntimeError: operator foo::bar does not exist", 1)


def test_notices_are_said_by_rank_zero_only():
    """Every DDP process sets its data up, so each would print every data notice again."""
    import warnings

    from lightning.fabric.utilities.rank_zero import rank_zero_only

    from terramind_ft.cli.app import _show_notices_plainly
    from terramind_ft.data.value_scale import ValueScaleNotice

    _show_notices_plainly()
    before = rank_zero_only.rank
    try:
        rank_zero_only.rank = 0
        assert warnings.formatwarning("x", ValueScaleNotice, "f.py", 1) == "notice: x\n"
        rank_zero_only.rank = 1
        assert warnings.formatwarning("x", ValueScaleNotice, "f.py", 1) == ""
        assert "UserWarning: y" in warnings.formatwarning("y", UserWarning, "f.py", 1)  # others unchanged
    finally:
        rank_zero_only.rank = before
