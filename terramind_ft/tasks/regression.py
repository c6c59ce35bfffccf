"""PixelwiseRegressionTask: one value per pixel (``batch["mask"]``: float [B, H, W]); monitors val/RMSE."""

from __future__ import annotations

from typing import Any

import torch

from terramind_ft.inference.scene import predict_scene_batch
from terramind_ft.tasks import metrics as M
from terramind_ft.tasks.base import BaseTask


class PixelwiseRegressionTask(BaseTask):
    """Pixelwise regression; ``loss`` in mse | mae | rmse | huber (default mse); NaN targets and
    ``ignore_index`` pixels are left out of loss and metrics."""

    task = "regression"

    def __init__(self, *args: Any, loss: str | list[str] | dict[str, float] = "mse", **kwargs: Any):
        super().__init__(*args, loss=loss, **kwargs)

    def make_metrics(self) -> M.RegressionMetrics:
        return M.RegressionMetrics(self.ignore_index)

    def target(self, batch: dict[str, Any]) -> torch.Tensor:
        return batch["mask"].float()

    def predictions(self, output: torch.Tensor) -> torch.Tensor:
        return output

    def train_metric(self, output: torch.Tensor, target: torch.Tensor) -> tuple[str, torch.Tensor]:
        valid = torch.isfinite(target)
        if self.ignore_index is not None:
            valid &= target != self.ignore_index
        err = (output.float() - target)[valid]
        return M.TRAIN_STEP[self.task][1], err.square().mean().sqrt() if err.numel() else err.sum()

    def predict_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> dict[str, Any]:
        if "scene" in batch:  # streamed from the files (tiled inference), see BaseTask.setup
            return predict_scene_batch(self, batch)
        return {"values": self.infer(batch["image"], "predict").float(), "filename": batch.get("filename", {}),
                "nodata": batch.get("nodata")}
