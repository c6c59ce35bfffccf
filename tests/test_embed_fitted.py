"""Embeddings of a fine-tuned backbone, on the user's path: fit, then ``embed --ckpt_path best``, ``few-shot
--ckpt_path``, or ``predict --config configs/embeddings.yaml --ckpt_path best.ckpt``. The vectors are the fitted
encoder's (not the config's initial weights, not the segmentation maps), nothing is downloaded, LoRA checkpoints
embed as their merged backbone, and every file says which weights made it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from terramind_ft.cli import main
from terramind_ft.errors import CheckpointError, ConfigError

pq = pytest.importorskip("pyarrow.parquet")
pytest.importorskip("pyproj")

FIT_SHORT = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1",
             "--trainer.enable_progress_bar", "false", "--trainer.precision", "32-true"]
WEIGHTS = b"terramind_ft:weights"




def _fit(config: str = "configs/quickstart.yaml", *extra: str) -> Path:
    assert main(["fit", "--config", config, *FIT_SHORT, *extra]) == 0
    return Path("runs/quickstart/checkpoints/best.ckpt")


def _vectors(path: str | Path) -> tuple[dict[str, np.ndarray], bytes | None]:
    table = pq.read_table(path)
    rows = {r["chip_id"]: np.asarray(r["embedding"]) for r in table.to_pylist()}
    return rows, (table.schema.metadata or {}).get(WEIGHTS)


def _reference(ckpt: Path, layers: list[int]) -> dict[str, np.ndarray]:
    """The fitted encoder of ``ckpt`` on the quickstart's test chip, computed here without the command."""
    from terramind_ft.cli.app import build_cli
    from terramind_ft.cli.checkpoints import load_checkpoint_file
    from terramind_ft.data.transforms import Compose

    cli = build_cli(["--config", "configs/quickstart.yaml"], run=False)
    state = load_checkpoint_file(ckpt)["state_dict"]
    cli.model.load_state_dict(state)
    encoder = cli.model.model.encoder.eval()
    dataset = cli.datamodule.make_dataset("test", transform=Compose([]))
    out = {}
    with torch.no_grad():
        for i in range(len(dataset)):
            sample = dataset[i]
            features = encoder({m: v[None] for m, v in sample["image"].items()})
            vector = torch.cat([features[k].mean(dim=1) for k in layers], dim=-1)[0]
            out[Path(next(iter(sample["filename"].values()))).stem] = vector.numpy()
    return out


def test_embed_with_ckpt_path_best_gives_the_fitted_encoders_vectors(workdir, monkeypatch):
    best = _fit()
    assert main(["embed", "--config", "configs/quickstart.yaml", "--split", "test", "--layers", "5,-1",
                 "--ckpt_path", "best", "--output", "fitted", "--trainer.precision", "32-true"]) == 0
    fitted, weights = _vectors("fitted/embeddings.parquet")
    assert weights is not None and str(best).encode() in weights and b"fine-tuned SemanticSegmentationTask" in weights
    reference = _reference(best, [5, -1])
    assert fitted.keys() == reference.keys()
    for chip, vector in fitted.items():
        np.testing.assert_allclose(vector, reference[chip], rtol=1e-5, atol=1e-5)
    # without --ckpt_path the config's own (random) weights: other vectors, and the file says so
    assert main(["embed", "--config", "configs/quickstart.yaml", "--split", "test", "--layers", "5,-1",
                 "--output", "initial", "--trainer.precision", "32-true"]) == 0
    initial, weights = _vectors("initial/embeddings.parquet")
    assert weights.startswith(b"random (init ")
    assert all(not np.allclose(initial[c], fitted[c], atol=1e-3) for c in fitted)


def test_embed_with_a_checkpoint_downloads_nothing(workdir, monkeypatch):
    best = _fit()
    import terramind_ft.hub as hub

    def no_download(*args, **kwargs):
        raise AssertionError("the config's pretrained weights were fetched although the checkpoint holds them")

    monkeypatch.setattr(hub, "download", no_download)
    assert main(["embed", "--config", "configs/quickstart.yaml", "--split", "test", "--ckpt_path", str(best),
                 "--model.init_args.model_args.backbone_pretrained", "true", "--output", "out"]) == 0
    assert _vectors("out/embeddings.parquet")[0]


def test_predict_with_the_embedding_config_and_a_fitted_checkpoint_writes_its_embeddings(workdir, capsys):
    best = _fit()
    fp32 = ["--trainer.precision", "32-true"]
    assert main(["predict", "--config", "configs/embeddings.yaml", "--ckpt_path", str(best), *fp32]) == 0
    err = capsys.readouterr().err
    assert "embedding with its fine-tuned backbone" in err
    by_task, weights = _vectors("runs/embeddings/embeddings/embeddings.parquet")
    assert str(best).encode() in weights
    assert not list(Path("runs/embeddings").rglob("*_pred.tif"))  # no segmentation maps
    # the same vectors as the command with --ckpt_path (the embedding config's layers 5 and -1)
    assert main(["embed", "--config", "configs/embeddings.yaml", "--layers", "5,-1", "--ckpt_path", str(best),
                 "--output", "cmd", *fp32]) == 0
    by_command, _ = _vectors("cmd/embeddings.parquet")
    assert by_task.keys() == by_command.keys() and len(by_task) == 5
    for chip, vector in by_task.items():
        np.testing.assert_allclose(vector, by_command[chip], rtol=1e-5, atol=1e-5)


def test_python_embedding_task_with_backbone_from(workdir):
    from terramind_ft.tasks import EmbeddingTask

    best = _fit()
    task = EmbeddingTask(backbone_from=str(best), layers=[-1])
    state = torch.load(best, map_location="cpu", weights_only=True)["state_dict"]
    qkv = "encoder.3.attn.qkv.weight"
    assert torch.equal(task.backbone.state_dict()[qkv], state[f"model.encoder.{qkv}"])
    assert not any(p.requires_grad for p in task.backbone.parameters())


def test_a_lora_checkpoint_embeds_as_its_merged_backbone(workdir):
    pytest.importorskip("peft")
    config = yaml.safe_load(Path("configs/quickstart.yaml").read_text())
    config["model"]["init_args"]["model_args"]["peft_config"] = {
        "method": "LORA", "replace_qkv": "qkv", "peft_config_kwargs": {"r": 4, "lora_alpha": 8, "target_modules": ["qkv.q_linear", "qkv.v_linear"]}}
    Path("lora.yaml").write_text(yaml.safe_dump(config))
    best = _fit("lora.yaml")
    assert main(["merge-lora", str(best), "--output", "merged.ckpt"]) == 0
    common = ["embed", "--config", "configs/quickstart.yaml", "--split", "test", "--trainer.precision", "32-true"]
    assert main([*common, "--ckpt_path", str(best), "--output", "lora"]) == 0
    assert main([*common, "--ckpt_path", "merged.ckpt", "--output", "merged"]) == 0
    lora, _ = _vectors("lora/embeddings.parquet")
    merged, _ = _vectors("merged/embeddings.parquet")
    for chip, vector in lora.items():
        np.testing.assert_allclose(vector, merged[chip], rtol=1e-4, atol=1e-4)


def test_bad_checkpoints_are_named(workdir, capsys):
    assert main(["embed", "--config", "configs/quickstart.yaml", "--ckpt_path", "nope.ckpt"]) != 0
    assert "nope.ckpt: no such file" in capsys.readouterr().err
    assert main(["embed", "--config", "configs/quickstart.yaml", "--ckpt_path", "best"]) != 0
    assert "no 'best' checkpoint at runs/quickstart/checkpoints/best.ckpt" in capsys.readouterr().err
    torch.save({"state_dict": {"w": torch.zeros(1)}}, "plain.ckpt")
    from terramind_ft.tasks.fitted import fitted_backbone

    with pytest.raises(CheckpointError, match="does not say which task it holds"):
        fitted_backbone("plain.ckpt")
    with pytest.raises((CheckpointError, ConfigError), match="missing.ckpt"):
        fitted_backbone("missing.ckpt")
    # a multi-date model's backbone does not embed single dates: refused with the reason, before it is built
    torch.save({"state_dict": {}, "hyper_parameters": {
        "_class_path": "terramind_ft.tasks.SemanticSegmentationTask",
        "model_args": {"backbone": "terramind_v1_tiny", "backbone_use_temporal": True}}}, "temporal.ckpt")
    with pytest.raises(ConfigError, match="backbone_use_temporal") as err:
        fitted_backbone("temporal.ckpt")
    assert err.value.key == "ckpt_path"


def test_a_checkpoint_trained_from_python_embeds_and_merges(tmp_path):
    """trainer.fit(task) in a notebook: its checkpoint names the task class as the CLI's do."""
    import lightning.pytorch as pl

    from cli_configs import TINY_MODEL_ARGS, sen1floods11_config
    from terramind_ft.data import GenericMultiModalDataModule
    from terramind_ft.tasks import SemanticSegmentationTask
    from terramind_ft.tasks.fitted import fitted_backbone

    config = sen1floods11_config(tmp_path)
    task = SemanticSegmentationTask(model_args=dict(TINY_MODEL_ARGS), lr=1e-2, plot_on_val=0, ignore_index=-1)
    trainer = pl.Trainer(accelerator="cpu", max_steps=1, limit_val_batches=0, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         default_root_dir=tmp_path / "run")
    trainer.fit(task, datamodule=GenericMultiModalDataModule(**config["data"]["init_args"]))
    trainer.save_checkpoint(tmp_path / "python.ckpt")
    saved = torch.load(tmp_path / "python.ckpt", weights_only=True)
    assert saved["terramind_ft_task_class"] == "terramind_ft.tasks.segmentation.SemanticSegmentationTask"
    encoder, model_args = fitted_backbone(tmp_path / "python.ckpt")
    assert model_args["backbone"] == "terramind_v1_tiny"
    for key, value in encoder.state_dict().items():
        assert torch.equal(value, task.model.encoder.state_dict()[key]), key
    # and it loads back from Python as before (the name is no hyper-parameter, so it never reaches __init__)
    reloaded = SemanticSegmentationTask.load_from_checkpoint(tmp_path / "python.ckpt", weights_only=True)
    assert torch.equal(reloaded.model.encoder.state_dict()[key], value)
