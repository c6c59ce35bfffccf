"""Loggers with the image APIs of TensorBoard (SummaryWriter.add_figure) and MLflow (MlflowClient.log_artifact),
recording what they are given: the previews' route to a logger is tested without those packages."""

from __future__ import annotations

import json
from pathlib import Path

from lightning.pytorch.loggers import Logger


class _Recorder:
    def __init__(self, path: str):
        self.path = Path(path)

    def _add(self, entry: dict) -> None:
        entries = json.loads(self.path.read_text()) if self.path.exists() else []
        self.path.write_text(json.dumps(entries + [entry]))


class SummaryWriterLike(_Recorder):
    def add_figure(self, tag, figure, global_step=None, close=True):
        self._add({"api": "add_figure", "tag": tag, "step": global_step, "axes": len(figure.axes), "close": close})


class MlflowClientLike(_Recorder):
    def log_artifact(self, run_id, local_path, artifact_path=None):
        self._add({"api": "log_artifact", "run_id": run_id, "file": local_path, "artifact_path": artifact_path})


class _RecordingLogger(Logger):
    experiment_class: type = _Recorder

    def __init__(self, record: str):
        super().__init__()
        self._experiment = self.experiment_class(record)
        self.run_id = "run-1"

    @property
    def experiment(self):
        return self._experiment

    @property
    def name(self):
        return "recording"

    @property
    def version(self):
        return 0

    def log_hyperparams(self, params, *args, **kwargs):
        pass

    def log_metrics(self, metrics, step=None):
        pass


class TensorBoardLike(_RecordingLogger):
    experiment_class = SummaryWriterLike


class MlflowLike(_RecordingLogger):
    experiment_class = MlflowClientLike
