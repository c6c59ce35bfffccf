"""The data module from YAML through LightningCLI/jsonargparse, TerraTorch-style entries included, and one
training step on its batches."""

from __future__ import annotations

import pytest
import torch
import yaml
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import LightningCLI

from terramind_ft.data.datamodule import GenericMultiModalDataModule
from terramind_ft.data.transforms import TransformNotice


class TinySegmenter(LightningModule):
    """1x1 conv over the concatenated modalities; checks the batch contract on every step."""

    def __init__(self, in_channels: int = 15, num_classes: int = 2, ignore_index: int = -1):
        super().__init__()
        self.conv = torch.nn.Conv2d(in_channels, num_classes, 1)
        self.ignore_index = ignore_index
        self.seen: list[dict] = []

    def training_step(self, batch, batch_idx):
        x = torch.cat([batch["image"][m] for m in ("S2L1C", "S1GRD")], 1)
        assert x.dtype == torch.float32 and torch.isfinite(x).all()
        self.seen.append({"keys": set(batch), "shape": tuple(x.shape), "mask": batch["mask"].dtype})
        return torch.nn.functional.cross_entropy(self.conv(x), batch["mask"], ignore_index=self.ignore_index)

    def validation_step(self, batch, batch_idx):
        return None

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


@pytest.fixture(autouse=True)
def _plain_argv(monkeypatch):
    """LightningCLI warns when pytest's own argv is present next to args=[...]."""
    monkeypatch.setattr("sys.argv", ["terramind-ft"])


def test_terratorch_style_yaml_through_lightning_cli(flood, tmp_path):
    init_args = flood.datamodule_kwargs(batch_size=2)
    # exactly how the TerraMind Sen1Floods11 config writes these keys
    init_args.update({
        "train_transform": [{"class_path": "albumentations.D4"},
                            {"class_path": "albumentations.RandomCrop", "init_args": {"height": 32, "width": 32}},
                            {"class_path": "ToTensorV2"}],
        "means": {"S2L1C": [2357.089] * 13, "S2L2A": [1.0] * 12, "S1GRD": [-12.599, -20.293], "RGB": [87.0] * 3},
        "stds": {"S2L1C": [1624.683] * 13, "S2L2A": [1.0] * 12, "S1GRD": [5.195, 5.890], "RGB": [58.0] * 3},
    })
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "data": {"class_path": "terramind_ft.data.datamodule.GenericMultiModalDataModule", "init_args": init_args},
        "trainer": {"max_steps": 2, "limit_val_batches": 1, "logger": False, "enable_checkpointing": False,
                    "enable_progress_bar": False, "enable_model_summary": False, "accelerator": "cpu",
                    "default_root_dir": str(tmp_path)},
    }))
    with pytest.warns(TransformNotice, match="albumentations.RandomCrop -> terramind-ft transform"):
        cli = LightningCLI(TinySegmenter, GenericMultiModalDataModule, subclass_mode_data=True,
                           save_config_callback=None,
                           args=["fit", "--config", str(config), "--data.init_args.num_workers", "0"])
    dm = cli.datamodule
    assert isinstance(dm, GenericMultiModalDataModule) and dm.means["S1GRD"] == [-12.599, -20.293]
    assert cli.model.seen and all(s["shape"] == (2, 15, 32, 32) and s["mask"] == torch.int64 for s in cli.model.seen)
    assert cli.model.seen[0]["keys"] == {"image", "mask", "filename", "nodata", "nodata_pixels"}


def test_print_config_round_trips_our_transform_schema(flood, tmp_path, capsys):
    init_args = flood.datamodule_kwargs(train_transform=["d4", {"random_crop": 32}, {"hflip": {"p": 0.2}}],
                                        val_transform=[{"center_crop": [32, 32]}])
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"data": {"class_path": "terramind_ft.data.datamodule.GenericMultiModalDataModule",
                                               "init_args": init_args}}))
    with pytest.raises(SystemExit):
        LightningCLI(TinySegmenter, GenericMultiModalDataModule, subclass_mode_data=True,
                     args=["fit", "--config", str(config), "--print_config"])
    printed = yaml.safe_load(capsys.readouterr().out)["data"]["init_args"]
    assert printed["train_transform"] == ["d4", {"random_crop": 32}, {"hflip": {"p": 0.2}}]
    assert printed["val_transform"] == [{"center_crop": [32, 32]}]
    assert printed["train_data_root"] == flood.data_roots and printed["no_data_replace"] == 0.0
