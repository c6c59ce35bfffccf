"""Plots: RGB de-standardised and stretched, other modalities grey, mask with legend, prediction, PNG file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from terramind_ft.data.datamodule import GenericMultiModalDataModule
from terramind_ft.data.plot import plot_sample, save_figure
from terramind_ft.data.synthetic import make_classification

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def dm(flood):
    return GenericMultiModalDataModule(**flood.datamodule_kwargs(batch_size=2))


def _titles(fig):
    return [ax.get_title() for ax in fig.axes]


def _legend(fig):
    return [t.get_text() for legend in fig.legends for t in legend.get_texts()]


def test_sample_figure_panels_and_legend(dm):
    sample = dm.make_dataset("val")[0]
    fig = dm.plot(sample, prediction=torch.randn(2, 64, 64), title="val 0")
    assert _titles(fig) == ["S2L1C (RGB [3, 2, 1])", "S1GRD (band 0)", "mask", "prediction"]
    assert _legend(fig) == ["Others", "Flood", "ignored (-1)"]
    assert fig._suptitle.get_text() == "val 0"
    rgb = fig.axes[0].get_images()[0].get_array()
    assert rgb.shape == (64, 64, 3) and 0 <= rgb.min() and rgb.max() <= 1


def test_rgb_is_destandardised_and_percentile_stretched(dm):
    sample = dm.make_dataset("val")[0]
    raw = sample["image"]["S2L1C"].numpy() * np.array(dm.stds["S2L1C"])[:, None, None] + np.array(
        dm.means["S2L1C"])[:, None, None]
    red = raw[3]
    lo, hi = np.percentile(red[~sample["nodata"].numpy()], (2, 98))
    expected = np.clip((red - lo) / (hi - lo), 0, 1)
    shown = dm.plot(sample).axes[0].get_images()[0].get_array()[..., 0]
    np.testing.assert_allclose(shown, expected, atol=1e-4)


def test_batch_item_selection_and_class_map_prediction(dm, tmp_path):
    dm.setup("validate")
    batch = next(iter(dm.val_dataloader()))
    fig = dm.plot(batch, prediction=batch["mask"].clamp(min=0), index=1)
    mask_panel = fig.axes[2].get_images()[0].get_array()
    prediction_panel = fig.axes[3].get_images()[0].get_array()
    ignored = (batch["mask"][1] == -1).numpy()
    assert (mask_panel[ignored] == 0).all()  # ignore index drawn black
    np.testing.assert_array_equal(mask_panel[~ignored], prediction_panel[~ignored])
    path = dm.save_plot(batch, str(tmp_path / "deep" / "batch.png"), index=1)
    assert Path(path).read_bytes()[:8] == PNG
    assert not list((tmp_path / "deep").glob(".*"))  # the temp file was renamed


def test_classification_and_standalone_helper(tmp_path):
    data = make_classification(tmp_path / "cls", class_names=["a", "b", "c"])
    dm = GenericMultiModalDataModule(**data.datamodule_kwargs())
    sample = dm.make_dataset("train")[0]
    fig = dm.plot(sample, prediction=torch.tensor([0.1, 0.2, 3.0]))
    expected_label = ["a", "b", "c"][data.labels[data.prefixes["train"][0]]]
    assert fig._suptitle.get_text() == f"label: {expected_label} | prediction: c"
    assert _titles(fig) == ["S2L2A (RGB [3, 2, 1])", "S1RTC (band 0)"]
    # the helper the tasks use for datamodules without plot(): standardised inputs as they are
    fig = plot_sample(sample, None, modalities=["S1RTC"], means={"S1RTC": [0, 0]}, stds={"S1RTC": [1, 1]},
                      rgb_modality="S1RTC", rgb_indices=[0])
    assert _titles(fig) == ["S1RTC (band 0)"]
    assert Path(save_figure(fig, tmp_path / "x.png", dpi=50)).read_bytes()[:8] == PNG
