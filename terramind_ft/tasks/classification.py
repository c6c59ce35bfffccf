"""ClassificationTask: one class per sample (``batch["label"]``: int64 [B]); monitors val/Accuracy."""

from __future__ import annotations

from typing import Any

import torch

from terramind_ft.ops import class_ids
from terramind_ft.tasks import metrics as M
from terramind_ft.tasks.base import BaseTask


class ClassificationTask(BaseTask):
    """Scene classification; see :class:`BaseTask` for arguments. ``predict`` returns class ids and
    probabilities per sample (written as a CSV by the prediction writer)."""

    task = "classification"
    target_key = "label"

    def make_metrics(self) -> M.ClassificationMetrics:
        return M.ClassificationMetrics(self.num_classes, self.ignore_index, self.class_names)

    def target(self, batch: dict[str, Any]) -> torch.Tensor:
        return batch["label"].long()

    def predict_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> dict[str, Any]:
        probs = self.infer(batch["image"], "predict").float().softmax(dim=1)
        return {"label": class_ids(probs, dim=1), "probabilities": probs, "filename": batch.get("filename", {}),
                "class_names": self.class_names}
