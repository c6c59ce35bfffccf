"""A Lightning callback that times a training run from inside the tool's own process (terramind-ft or TerraTorch).

Used by scripts/bench_train.py, which puts this folder on PYTHONPATH and appends
``--trainer.callbacks+=bench_timer.StepTimer`` to both tools' command lines. Settings come from the environment
(``BENCH_WARMUP`` steps not timed, ``BENCH_T0`` the launch time, ``BENCH_OUT`` the JSON file to write), so the
command lines of both tools stay identical.
"""

from __future__ import annotations

import json
import os
import resource
import time

import torch
from lightning.pytorch.callbacks import Callback


class StepTimer(Callback):
    def __init__(self) -> None:
        self.warmup = int(os.environ.get("BENCH_WARMUP", "1"))
        self.t0 = float(os.environ.get("BENCH_T0", time.time()))
        self.out = os.environ.get("BENCH_OUT", "bench_timer.json")
        self.first_step_at: float | None = None
        self.window_start = self.window_end = 0.0
        self.step_seconds: list[float] = []
        self._start = 0.0
        self.batch_size = 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        now = time.perf_counter()
        if self.first_step_at is None:
            self.first_step_at = time.time()
        if batch_idx == self.warmup:
            self.window_start = now
        self._start = now

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        now = time.perf_counter()
        if batch_idx >= self.warmup:
            self.step_seconds.append(now - self._start)
            self.window_end = now
            image = batch["image"]
            first = next(iter(image.values())) if isinstance(image, dict) else image
            self.batch_size = int(first.shape[0])

    def on_train_end(self, trainer, pl_module):
        steps = len(self.step_seconds)
        window = self.window_end - self.window_start
        report = {
            "launch_to_first_step_s": (self.first_step_at or time.time()) - self.t0,
            "steps": steps,
            "s_per_step": sum(self.step_seconds) / max(steps, 1),
            "samples_per_s": steps * self.batch_size / window if window > 0 else float("nan"),
            "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
            "float32_matmul_precision": torch.get_float32_matmul_precision(),
            "trainable_params": sum(p.numel() for p in pl_module.parameters() if p.requires_grad),
            "precision": str(trainer.precision),
        }
        with open(self.out, "w") as f:
            json.dump(report, f)
