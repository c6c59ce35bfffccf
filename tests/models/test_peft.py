"""PEFT/LoRA on the TerraMind backbone (model_args.peft_config, as TerraTorch users write it) and merge-lora."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import rasterio
import torch
from torch import nn

from cli_configs import TINY_MODEL_ARGS, sen1floods11_config, write
from terramind_ft.cli import main
from terramind_ft.cli.checkpoints import load_checkpoint_file
from terramind_ft.errors import ConfigError
from terramind_ft.models.factory import build_model
from terramind_ft.models.peft import SplitQKV, merge_peft, trainable_parameters
from terramind_ft.registry import BACKBONE_REGISTRY
from terramind_ft.tasks import SemanticSegmentationTask

pytest.importorskip("peft")

RANK = 4
LORA = {"method": "LORA", "replace_qkv": "qkv",
        "peft_config_kwargs": {"target_modules": ["qkv.q_linear", "qkv.v_linear"], "r": RANK, "lora_alpha": 8}}
TINY_DIM, TINY_DEPTH = 192, 12


def _inputs(batch: int = 2, size: int = 32) -> dict[str, torch.Tensor]:
    return {"S2L1C": torch.randn(batch, 13, size, size), "S1GRD": torch.randn(batch, 2, size, size)}


def test_split_qkv_is_the_same_function_and_joins_back():
    fused = nn.Linear(8, 24)
    split = SplitQKV(fused)
    x = torch.randn(3, 5, 8)
    torch.testing.assert_close(split(x), fused(x))
    joined = split.fused()
    torch.testing.assert_close(joined.weight, fused.weight)
    torch.testing.assert_close(joined.bias, fused.bias)


def test_only_the_adapters_of_the_backbone_train():
    model = build_model("segmentation", dict(TINY_MODEL_ARGS, peft_config=LORA))
    trainable, total = trainable_parameters(model.encoder)
    # LoRA adds A (r x d) and B (d x r) to q and v of each block; nothing else of the backbone trains
    assert trainable == TINY_DEPTH * 2 * RANK * (TINY_DIM + TINY_DIM)
    assert total > 100 * trainable
    names = [n for n, p in model.encoder.named_parameters() if p.requires_grad]
    assert names and all("lora_" in n for n in names)
    assert all(p.requires_grad for p in model.decoder.parameters())
    assert all(p.requires_grad for p in model.head.parameters())
    # the keys are TerraTorch's (peft's wrapper around the reference's names), so checkpoints move between tools
    assert "encoder.base_model.model.encoder.0.attn.qkv.q_linear.lora_A.default.weight" in model.state_dict()


def test_merge_gives_the_plain_backbone_with_the_same_outputs():
    torch.manual_seed(0)
    model = build_model("segmentation", dict(TINY_MODEL_ARGS, peft_config=LORA)).eval()
    for name, p in model.encoder.named_parameters():
        if "lora_B" in name:  # B starts at zero (the adapter is a no-op): give it something to merge
            nn.init.normal_(p, std=0.05)
    x = _inputs()
    with torch.no_grad():
        adapted = model(x).output
        model.encoder = merge_peft(model.encoder)
        merged = model(x).output
    torch.testing.assert_close(merged, adapted, atol=1e-5, rtol=1e-4)
    plain = build_model("segmentation", dict(TINY_MODEL_ARGS))
    assert model.state_dict().keys() == plain.state_dict().keys()


@pytest.mark.parametrize(("change", "key", "words"), [
    ({"method": "LORAX"}, "peft_config.method", "unknown PEFT method 'LORAX'"),
    ({"peft_config_kwargs": {"target_modules": ["qkv.q_lin"], "r": 2}}, "peft_config.peft_config_kwargs.target_"
     "modules", "qkv.q_lin"),
    ({"replace_qkv": "qkvx"}, "peft_config.replace_qkv", "no layer of the backbone is named 'qkvx'"),
    ({"peft_config_kwargs": {"target_modules": ["qkv.q_linear"], "rank": 2}}, "peft_config.peft_config_kwargs",
     "rank"),
    ({"replace_qv": "qkv"}, "peft_config.replace_qv", "Did you mean 'replace_qkv'"),
])
def test_bad_peft_config_names_the_key(change, key, words):
    with pytest.raises(ConfigError) as err:
        build_model("segmentation", dict(TINY_MODEL_ARGS, peft_config={**LORA, **change}))
    assert key in str(err.value) and words in str(err.value)


def test_freeze_backbone_with_peft_is_refused():
    with pytest.raises(ConfigError, match="freeze_backbone.*adapters too"):
        SemanticSegmentationTask(model_args=dict(TINY_MODEL_ARGS, peft_config=LORA), freeze_backbone=True)


def test_missing_peft_says_which_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "peft", None)  # import peft -> ImportError
    with pytest.raises(ConfigError, match=r"terramind-ft\[peft\]"):
        build_model("segmentation", dict(TINY_MODEL_ARGS, peft_config=LORA))


def _probabilities(folder) -> dict[str, np.ndarray]:
    out = {}
    for path in sorted(folder.glob("*_probabilities.tif")):
        with rasterio.open(path) as src:
            out[path.name] = src.read()
    return out


def test_lora_fit_predict_merge_on_the_cli(tmp_path):
    """The user's path: fit with LoRA from backbone weights on disk, predict, merge-lora, predict again."""
    backbone_file = tmp_path / "backbone.pt"
    backbone = BACKBONE_REGISTRY.get("terramind_v1_tiny")(modalities=["S2L1C", "S1GRD"])
    torch.save(backbone.state_dict(), backbone_file)
    config = sen1floods11_config(tmp_path)
    model_args = config["model"]["init_args"]["model_args"]
    model_args.update(backbone_ckpt_path=str(backbone_file), peft_config=LORA)
    config["model"]["init_args"]["lr"] = 5e-2
    config["model"]["init_args"]["output_on_inference"] = ["prediction", "probabilities"]
    cfg = write(config, tmp_path / "lora.yaml")
    assert main(["fit", "--config", cfg]) == 0

    best = tmp_path / "run" / "checkpoints" / "best.ckpt"
    state = load_checkpoint_file(best)["state_dict"]
    base = backbone.state_dict()
    prefix = "model.encoder.base_model.model."
    # the backbone's own weights did not move ...
    for name in ("encoder.0.mlp.fc1.weight", "encoder.11.attn.proj.weight", "encoder_norm.weight"):
        torch.testing.assert_close(state[prefix + name], base[name], rtol=0, atol=0)
    q = base["encoder.3.attn.qkv.weight"][:TINY_DIM]
    torch.testing.assert_close(state[prefix + "encoder.3.attn.qkv.q_linear.base_layer.weight"], q, rtol=0, atol=0)
    # ... while the adapters did
    assert state[prefix + "encoder.3.attn.qkv.q_linear.lora_B.default.weight"].abs().max() > 0

    # the checkpoint holds every weight: predict on a machine without the backbone file works (it once read it)
    backbone_file.unlink()
    with_adapters, merged_out = tmp_path / "pred_lora", tmp_path / "pred_merged"
    assert main(["predict", "--config", cfg, "--ckpt_path", str(best), "--predict_output_dir", str(with_adapters)]) == 0
    merged_ckpt = tmp_path / "merged.ckpt"
    assert main(["merge-lora", str(best), "--output", str(merged_ckpt)]) == 0
    merged = load_checkpoint_file(merged_ckpt)
    assert "peft_config" not in merged["hyper_parameters"]["model_args"]
    assert not any("lora_" in k or "base_layer" in k for k in merged["state_dict"])
    merged_qkv = merged["state_dict"]["model.encoder.encoder.3.attn.qkv.weight"]
    assert not torch.allclose(merged_qkv, base["encoder.3.attn.qkv.weight"])  # the adapters are in the weights
    assert main(["predict", "--config", cfg, "--ckpt_path", str(merged_ckpt),
                 "--predict_output_dir", str(merged_out)]) == 0

    before, after = _probabilities(with_adapters), _probabilities(merged_out)
    assert before and before.keys() == after.keys()
    for name in before:
        np.testing.assert_allclose(after[name], before[name], atol=1e-4)



def test_a_lora_checkpoint_predicts_as_the_trained_model_did(tmp_path):
    """From Python: train a few steps, save, reload; the reloaded model gives the trained one's outputs."""
    import lightning.pytorch as pl

    from terramind_ft.data import GenericMultiModalDataModule

    config = sen1floods11_config(tmp_path)
    task = SemanticSegmentationTask(model_args=dict(TINY_MODEL_ARGS, peft_config=LORA), lr=5e-2, plot_on_val=0,
                                     ignore_index=-1)
    trainer = pl.Trainer(accelerator="cpu", max_steps=2, limit_val_batches=0, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         default_root_dir=tmp_path / "run")
    trainer.fit(task, datamodule=GenericMultiModalDataModule(**config["data"]["init_args"]))
    trainer.save_checkpoint(tmp_path / "lora.ckpt")
    reloaded = SemanticSegmentationTask.load_from_checkpoint(tmp_path / "lora.ckpt", weights_only=True).eval()
    task.eval()
    x = _inputs(1, 64)
    with torch.no_grad():
        assert any(p.abs().max() > 0 for n, p in task.named_parameters() if "lora_B" in n)  # the adapters trained
        torch.testing.assert_close(reloaded(x), task(x))
    # merge-lora takes a checkpoint saved from Python too (it names its task class), and Python loads the result
    from terramind_ft.commands.merge_lora import merge_checkpoint

    merged = SemanticSegmentationTask.load_from_checkpoint(merge_checkpoint(tmp_path / "lora.ckpt"),
                                                           weights_only=True).eval()
    with torch.no_grad():
        torch.testing.assert_close(merged(x), task(x), atol=1e-4, rtol=1e-4)
