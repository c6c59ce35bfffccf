"""SemanticSegmentationTask: per-pixel classes; monitors val/mIoU."""

from __future__ import annotations

from typing import Any

import torch

from terramind_ft.errors import ConfigError
from terramind_ft.inference.scene import predict_scene_batch
from terramind_ft.ops import class_ids
from terramind_ft.tasks import metrics as M
from terramind_ft.tasks.base import BaseTask

OUTPUTS = ("prediction", "probabilities", "logits")


class SemanticSegmentationTask(BaseTask):
    """Semantic segmentation (``batch["mask"]``: int64 [B, H, W]); see :class:`BaseTask` for the other arguments.

    Args:
        output_on_inference: what ``predict`` writes, any of ``prediction`` (uint8 class map, always written),
            ``probabilities`` (float32 softmax), ``logits`` (float32).
        boundary_miou: also compute ``val/Boundary_mIoU`` and ``test/Boundary_mIoU`` (the IoU of the bands along
            the class contours; see :class:`~terramind_ft.tasks.metrics.SegmentationMetrics`). Off by default: it
            costs a pooling pass per batch.
    """

    task = "segmentation"
    run_settings = (*BaseTask.run_settings, "output_on_inference", "boundary_miou")

    def __init__(self, *args: Any, output_on_inference: str | list[str] = "prediction", boundary_miou: bool = False,
                 **kwargs: Any):
        self.boundary_miou = bool(boundary_miou)  # read by make_metrics, which the base class calls
        super().__init__(*args, **kwargs)
        outputs = [output_on_inference] if isinstance(output_on_inference, str) else list(output_on_inference)
        bad = [o for o in outputs if o not in OUTPUTS]
        if bad:
            raise ConfigError(f"unknown output(s) {bad}; choose from {OUTPUTS}",
                              key="model.init_args.output_on_inference")
        self.outputs = outputs

    def make_metrics(self) -> M.SegmentationMetrics:
        return M.SegmentationMetrics(self.num_classes, self.ignore_index, self.class_names,
                                     boundary=self.boundary_miou)

    def metric_names(self, stage: str) -> list[str]:
        extra = ["Boundary_mIoU"] if self.boundary_miou else []
        return M.metric_names(self.task, stage, self.class_names, self.loss_fn.names, extra)

    def target(self, batch: dict[str, Any]) -> torch.Tensor:
        return batch["mask"].long()

    def predict_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> dict[str, Any]:
        if "scene" in batch:  # streamed from the files (tiled inference), see BaseTask.setup
            return predict_scene_batch(self, batch)
        logits = self.infer(batch["image"], "predict").float()
        out: dict[str, Any] = {"class_map": class_ids(logits, dim=1).to(torch.uint8),
                               "filename": batch.get("filename", {}), "nodata": batch.get("nodata"),
                               "class_names": self.class_names}
        if "probabilities" in self.outputs:
            out["probabilities"] = logits.softmax(dim=1)
        if "logits" in self.outputs:
            out["logits"] = logits
        return out
