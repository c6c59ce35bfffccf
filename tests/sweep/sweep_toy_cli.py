"""A tiny LightningCLI program with the contract of ``terramind_ft.cli.build_cli``.

It lets the sweep engine be tested (search, launch, requeue, resume, results) without TerraMind: a
two-layer MLP regressing a fixed linear target. ``val/score`` (= -MSE, higher is better) depends on the
learning rate and the width, so different trials give different values. Knobs for fault tests:
``fail_if_hidden`` makes one width raise; ``step_sleep_s`` slows training so a test can interrupt it;
``ctrl_c_file`` (when that file exists) raises KeyboardInterrupt once in the second epoch, as Ctrl-C would.
Every training start appends the epoch it starts from to ``<default_root_dir>/fit_starts.txt``.
"""

from __future__ import annotations

import time
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


class ToyRegressor(pl.LightningModule):
    def __init__(self, hidden: int = 8, fail_if_hidden: int | None = None, step_sleep_s: float = 0.0,
                 ctrl_c_file: str | None = None):
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Linear(4, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def on_train_start(self) -> None:  # after a checkpoint restored the loop state
        with open(Path(self.trainer.default_root_dir) / "fit_starts.txt", "a") as f:
            f.write(f"{self.trainer.current_epoch}\n")

    def training_step(self, batch, batch_idx):
        if self.hparams.fail_if_hidden == self.hparams.hidden:
            raise RuntimeError(f"toy failure for hidden={self.hparams.hidden}")
        flag = self.hparams.ctrl_c_file
        if flag and self.current_epoch >= 1 and Path(flag).exists():  # Ctrl-C once, in the second epoch
            Path(flag).unlink()
            raise KeyboardInterrupt
        if self.hparams.step_sleep_s:
            time.sleep(self.hparams.step_sleep_s)
        x, y = batch
        loss = nn.functional.mse_loss(self.net(x), y)
        self.log("train/loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        mse = nn.functional.mse_loss(self.net(x), y)
        self.log("val/loss", mse)
        self.log("val/score", -mse)


class ToyData(pl.LightningDataModule):
    def __init__(self, n: int = 64, batch_size: int = 16):
        super().__init__()
        self.n = n
        self.batch_size = batch_size

    def setup(self, stage: str | None = None) -> None:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(self.n, 4, generator=g)
        y = x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]]) + 0.1 * torch.randn(self.n, 1, generator=g)
        self.train_set = TensorDataset(x, y)
        self.val_set = TensorDataset(x[: self.n // 2], y[: self.n // 2])

    def train_dataloader(self):
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self):
        return DataLoader(self.val_set, batch_size=self.batch_size)


def build_cli(args: list[str], run: bool = False) -> LightningCLI:
    if not run and args and args[0] in ("fit", "validate", "test", "predict"):
        args = list(args[1:])
    return LightningCLI(
        ToyRegressor,
        ToyData,
        args=args,
        run=run,
        save_config_kwargs={"overwrite": True},
        trainer_defaults={
            "callbacks": [ModelCheckpoint(monitor="val/score", mode="max", save_last=True)],
            "logger": False,
            "enable_progress_bar": False,
            "enable_model_summary": False,
        },
    )


BASE_CONFIG = """\
seed_everything: 0
model:
  hidden: 8
optimizer:
  class_path: torch.optim.SGD
  init_args:
    lr: 0.05
data:
  n: 64
  batch_size: 16
trainer:
  max_epochs: 2
  accelerator: cpu
  devices: 1
  num_sanity_val_steps: 0
"""
