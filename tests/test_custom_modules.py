"""custom_modules_path: the user's own decoder (registered by name) and callback (by dotted path) in a fit."""

from __future__ import annotations

import sys
import textwrap

import pytest
import torch

from cli_configs import sen1floods11_config, write
from terramind_ft.cli import main

DECODER = '''
from torch import nn
from terramind_ft.registry import DECODER_REGISTRY

@DECODER_REGISTRY.register
class OneConvDecoder(nn.Module):
    """A user's decoder: one 1x1 convolution on the last feature map."""
    def __init__(self, embed_dim, channels=8):
        super().__init__()
        self.conv = nn.Conv2d(list(embed_dim)[-1], channels, 1)
        self.out_channels = channels
    def forward(self, features):
        return self.conv(features[-1])
'''
CALLBACK = '''
from pathlib import Path
from lightning.pytorch.callbacks import Callback

class StepCounter(Callback):
    def __init__(self, path: str):
        self.path = path
        self.steps = 0
    def on_train_batch_end(self, *args, **kwargs):
        self.steps += 1
        Path(self.path).write_text(str(self.steps))
'''


@pytest.fixture
def user_modules(tmp_path, monkeypatch):
    folder = tmp_path / "my_modules"
    folder.mkdir()
    (folder / "decoders.py").write_text(textwrap.dedent(DECODER))
    (folder / "callbacks.py").write_text(textwrap.dedent(CALLBACK))
    monkeypatch.chdir(tmp_path)
    from terramind_ft.registry import DECODER_REGISTRY

    DECODER_REGISTRY.get("UNetDecoder")  # registers the built-in entries before the snapshot
    monkeypatch.setattr(DECODER_REGISTRY, "_entries", dict(DECODER_REGISTRY._entries))  # forget the user's after
    yield folder
    for name in [m for m in sys.modules if m == "my_modules" or m.startswith("my_modules.")]:
        del sys.modules[name]
    if str(tmp_path) in sys.path:
        sys.path.remove(str(tmp_path))


def test_custom_modules_resolve_in_a_fit(tmp_path, user_modules):
    config = sen1floods11_config(tmp_path, custom_modules_path="my_modules")
    model_args = config["model"]["init_args"]["model_args"]
    model_args["decoder"] = "OneConvDecoder"
    model_args.pop("decoder_channels")
    counter = tmp_path / "steps.txt"
    config["trainer"]["callbacks"] = [{"class_path": "my_modules.callbacks.StepCounter",
                                       "init_args": {"path": str(counter)}}]
    assert main(["fit", "--config", write(config, tmp_path / "custom.yaml")]) == 0
    assert counter.read_text() == "2"
    state = torch.load(tmp_path / "run" / "checkpoints" / "best.ckpt", weights_only=True)["state_dict"]
    assert "model.decoder.conv.weight" in state


def test_custom_modules_on_the_command_line(tmp_path, user_modules):
    config = sen1floods11_config(tmp_path)
    config["model"]["init_args"]["model_args"]["decoder"] = "OneConvDecoder"
    config["model"]["init_args"]["model_args"].pop("decoder_channels")
    cfg = write(config, tmp_path / "custom.yaml")
    assert main(["fit", "--config", cfg]) == 2  # without the modules the decoder name is unknown: a config error
    assert main(["fit", "--config", cfg, "--custom_modules_path", str(user_modules)]) == 0


def test_a_broken_custom_module_is_named(tmp_path, user_modules, capsys):
    (user_modules / "broken.py").write_text("import not_a_package_anywhere\n")
    config = sen1floods11_config(tmp_path, custom_modules_path="my_modules")
    assert main(["fit", "--config", write(config, tmp_path / "custom.yaml")]) == 2
    err = capsys.readouterr().err
    assert "custom_modules_path: importing my_modules.broken" in err and "not_a_package_anywhere" in err


def test_a_missing_folder_is_named(tmp_path, capsys):
    config = sen1floods11_config(tmp_path, custom_modules_path=str(tmp_path / "nowhere"))
    assert main(["fit", "--config", write(config, tmp_path / "custom.yaml")]) == 2
    assert "custom_modules_path" in capsys.readouterr().err
