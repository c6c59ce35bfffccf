"""Validation previews say which file they show and how well the model did on it; notices that matter once."""

from __future__ import annotations

import logging

import torch

from terramind_ft.models.terramind import embeddings
from terramind_ft.models.terramind.encoder import TerraMindEncoder
from terramind_ft.tasks.base import BaseTask, _first_files


def test_per_sample_scores_count_only_valid_pixels():
    class Seg:
        task, ignore_index = "segmentation", -1

    predicted = torch.tensor([[[1, 1], [0, 0]], [[0, 0], [0, 0]]])
    target = torch.tensor([[[1, 0], [-1, -1]], [[-1, -1], [-1, -1]]])
    assert BaseTask._sample_scores(Seg(), predicted, target) == ["accuracy 0.50", "no valid label"]
    assert _first_files({"S2L1C": ["/d/a_S2Hand.tif", "/d/b_S2Hand.tif"], "mask": ["x"]}, 1) == ["/d/a_S2Hand.tif"]


def test_position_embedding_interpolation_is_said_once_with_the_grid(caplog):
    embeddings._INTERPOLATIONS_SAID.clear()
    model = TerraMindEncoder(["S2L2A"], size="tiny").eval()
    with caplog.at_level(logging.INFO, logger="terramind_ft"), torch.no_grad():
        for _ in range(2):
            model(torch.randn(1, 12, 512, 512))
        model(torch.randn(1, 12, 224, 224))  # the pretraining grid: nothing to say
    said = [r.getMessage() for r in caplog.records if "interpolated" in r.getMessage()]
    assert said == ["notice: position embeddings interpolated (bicubic, as the reference) from the pretraining grid "
                    "14x14 (224x224 px) to 32x32 (512x512 px)"]
