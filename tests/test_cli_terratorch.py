"""A TerraMind config written for TerraTorch (the official Sen1Floods11 schema) runs with terramind-ft.

Only the data paths (generated data), the backbone size (tiny, random weights) and the run length differ from
IBM/terramind's configs/terramind_v1_base_sen1floods11.yaml.
"""

from __future__ import annotations

import logging

import yaml

from cli_configs import FAST_TRAINER
from terramind_ft.cli import main
from terramind_ft.data.synthetic import make_sen1floods11

TERRATORCH_CONFIG = """
seed_everything: 42
trainer:
  accelerator: auto
  strategy: auto
  devices: auto
  num_nodes: 1
  precision: 16-mixed
  logger: true
  callbacks:
    - class_path: RichProgressBar
    - class_path: LearningRateMonitor
      init_args:
        logging_interval: epoch
  max_epochs: 100
  log_every_n_steps: 5
  default_root_dir: {root}/output/terramind_base_sen1floods11/
data:
  class_path: terratorch.datamodules.GenericMultiModalDataModule
  init_args:
    task: 'segmentation'
    batch_size: 2
    num_workers: 0
    modalities:
      - S2L1C
      - S1GRD
    rgb_modality: S2L1C
    rgb_indices:
      - 3
      - 2
      - 1
    train_data_root:
      S2L1C: {data}/data/S2L1CHand
      S1GRD: {data}/data/S1GRDHand
    train_label_data_root: {data}/data/LabelHand
    val_data_root:
      S2L1C: {data}/data/S2L1CHand
      S1GRD: {data}/data/S1GRDHand
    val_label_data_root: {data}/data/LabelHand
    test_data_root:
      S2L1C: {data}/data/S2L1CHand
      S1GRD: {data}/data/S1GRDHand
    test_label_data_root: {data}/data/LabelHand
    train_split: {data}/splits/flood_train_data.txt
    val_split: {data}/splits/flood_valid_data.txt
    test_split: {data}/splits/flood_test_data.txt
    image_grep:
      S2L1C: "*_S2Hand.tif"
      S1GRD: "*_S1Hand.tif"
    label_grep: "*_LabelHand.tif"
    no_label_replace: -1
    no_data_replace: 0
    num_classes: 2
    means:
      S2L1C: [2357.089, 2137.385, 2018.788, 2082.986, 2295.651, 2854.537, 3122.849, 3040.560, 3306.481, 1473.847,
              506.070, 2472.825, 1838.929]
      S2L2A: [1390.458, 1503.317, 1718.197, 1853.910, 2199.100, 2779.975, 2987.011, 3083.234, 3132.220, 3162.988,
              2424.884, 1857.648]
      S1GRD: [-12.599, -20.293]
      S1RTC: [-10.93, -17.329]
      RGB: [87.271, 80.931, 66.667]
      DEM: [670.665]
    stds:
      S2L1C: [1624.683, 1675.806, 1557.708, 1833.702, 1823.738, 1733.977, 1732.131, 1679.732, 1727.26, 1024.687,
              442.165, 1331.411, 1160.419]
      S2L2A: [2106.761, 2141.107, 2038.973, 2134.138, 2085.321, 1889.926, 1820.257, 1871.918, 1753.829, 1797.379,
              1434.261, 1334.311]
      S1GRD: [5.195, 5.890]
      S1RTC: [4.391, 4.459]
      RGB: [58.767, 47.663, 42.631]
      DEM: [951.272]
    train_transform:
      - class_path: albumentations.D4
      - class_path: ToTensorV2
model:
  class_path: terratorch.tasks.SemanticSegmentationTask
  init_args:
    model_factory: EncoderDecoderFactory
    model_args:
      backbone: terramind_v1_tiny
      backbone_pretrained: false
      backbone_modalities:
        - S2L1C
        - S1GRD
      backbone_merge_method: mean
      necks:
        - name: SelectIndices
          indices: [2, 5, 8, 11]
        - name: ReshapeTokensToImage
          remove_cls_token: False
        - name: LearnedInterpolateToPyramidal
      decoder: UNetDecoder
      decoder_channels: [512, 256, 128, 64]
      head_dropout: 0.1
      num_classes: 2
    loss: dice
    ignore_index: -1
    freeze_backbone: false
    freeze_decoder: false
    class_names:
      - Others
      - Flood
optimizer:
  class_path: torch.optim.AdamW
  init_args:
    lr: 2.e-5
lr_scheduler:
  class_path: ReduceLROnPlateau
  init_args:
    monitor: val/loss
    factor: 0.5
    patience: 5
"""


def test_official_terramind_config_for_terratorch_runs(tmp_path, caplog, monkeypatch):
    from terramind_ft.cli import terratorch

    monkeypatch.setattr(terratorch, "importable", lambda name: name != "rich")  # a machine without rich
    make_sen1floods11(tmp_path / "s1f11", size=64, splits={"train": 4, "val": 2, "test": 2})
    cfg = tmp_path / "terramind_v1_base_sen1floods11.yaml"
    cfg.write_text(TERRATORCH_CONFIG.format(root=tmp_path, data=tmp_path / "s1f11"))
    assert yaml.safe_load(cfg.read_text())["model"]["class_path"] == "terratorch.tasks.SemanticSegmentationTask"
    short = ["--trainer.max_epochs=1", "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1",
             "--trainer.limit_test_batches=1", f"--trainer.precision={FAST_TRAINER['precision']}"]
    with caplog.at_level(logging.INFO, logger="terramind_ft"):
        assert main(["fit", "--config", str(cfg), *short]) == 0
    notices = [r.getMessage() for r in caplog.records if r.getMessage().startswith("notice:")]
    assert any("terratorch.datamodules.GenericMultiModalDataModule -> terramind_ft" in n for n in notices)
    assert any("terratorch.tasks.SemanticSegmentationTask -> terramind_ft" in n for n in notices)
    assert any("RichProgressBar" in n for n in notices)
    run = tmp_path / "output" / "terramind_base_sen1floods11"
    assert (run / "checkpoints" / "best.ckpt").is_file() and (run / "config_deploy.yaml").is_file()
    assert main(["test", "--config", str(cfg), "--ckpt_path", "best", *short]) == 0
    assert (run / "checkpoints" / "metrics.json").is_file()


def test_16_mixed_on_cpu_becomes_the_default_precision(tmp_path, caplog):
    make_sen1floods11(tmp_path / "s1f11", size=64, splits={"train": 2, "val": 1, "test": 1})
    cfg = tmp_path / "tt.yaml"
    cfg.write_text(TERRATORCH_CONFIG.format(root=tmp_path, data=tmp_path / "s1f11"))
    from terramind_ft.cli.app import build_cli, default_precision

    with caplog.at_level(logging.INFO, logger="terramind_ft"):
        cli = build_cli(["fit", "--config", str(cfg)], run=False)
    assert cli.trainer.precision == default_precision()
    assert any("trainer.precision 16-mixed needs CUDA" in r.getMessage() for r in caplog.records)


def test_a_checkpoint_written_by_terratorch_tests_and_predicts(tmp_path, caplog):
    """TerraTorch's checkpoints hold the parameter names terramind-ft's models have for the same config
    (tests/models/test_terratorch_parity.py compares them with TerraTorch 1.2.11's), and its hyper-parameters
    name its own task class with its own arguments. Such a file used to be refused: the class could not be
    imported. Here a fitted checkpoint is rewritten the way TerraTorch writes one; test gives the same metrics."""
    import json

    import torch

    make_sen1floods11(tmp_path / "s1f11", size=64, splits={"train": 4, "val": 2, "test": 2})
    cfg = tmp_path / "terramind_v1_base_sen1floods11.yaml"
    cfg.write_text(TERRATORCH_CONFIG.format(root=tmp_path, data=tmp_path / "s1f11"))
    short = ["--trainer.max_epochs=1", "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1",
             "--trainer.limit_test_batches=1", "--trainer.precision=32-true", "--trainer.enable_progress_bar=false"]
    assert main(["fit", "--config", str(cfg), *short]) == 0
    run = tmp_path / "output" / "terramind_base_sen1floods11" / "checkpoints"
    assert main(["test", "--config", str(cfg), "--ckpt_path", "best", *short]) == 0
    ours = json.loads((run / "metrics.json").read_text())["metrics"]

    checkpoint = torch.load(run / "best.ckpt", weights_only=True)
    hp = checkpoint["hyper_parameters"]
    hp["_class_path"] = "terratorch.tasks.SemanticSegmentationTask"
    hp.update(output_most_probable=True, path_to_record_metrics=None)  # TerraTorch-only arguments
    checkpoint.pop("terramind_ft_task_class", None)
    checkpoint["callbacks"] = {k.replace("ModelCheckpoint", "StateDictAwareModelCheckpoint"): v
                               for k, v in checkpoint["callbacks"].items()}
    elsewhere = tmp_path / "from_terratorch"
    elsewhere.mkdir()
    torch.save(checkpoint, elsewhere / "epoch=0.ckpt")

    with caplog.at_level(logging.INFO, logger="terramind_ft"):
        assert main(["test", "--config", str(cfg), "--ckpt_path", str(elsewhere / "epoch=0.ckpt"), *short]) == 0
    assert any("was written by TerraTorch" in r.getMessage() for r in caplog.records)
    theirs = json.loads((elsewhere / "metrics.json").read_text())["metrics"]
    assert theirs.keys() == ours.keys()
    for key, value in ours.items():
        assert theirs[key] == value or (value != value and theirs[key] != theirs[key]), key  # NaN == NaN
    # a TerraTorch run goes on here: the optimiser state (TerraTorch's parameter groups and order) fits
    resumed = tmp_path / "resumed"
    assert main(["fit", "--config", str(cfg), "--ckpt_path", str(elsewhere / "epoch=0.ckpt"), *short,
                 "--trainer.max_epochs=2", f"--trainer.default_root_dir={resumed}"]) == 0
    assert torch.load(resumed / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 1
    out = tmp_path / "preds"
    roots = yaml.safe_load(cfg.read_text())["data"]["init_args"]["test_data_root"]
    assert main(["predict", "--config", str(cfg), "--ckpt_path", str(elsewhere / "epoch=0.ckpt"),
                 "--data.init_args.predict_data_root", json.dumps(roots), "--predict_output_dir", str(out),
                 *short]) == 0
    assert list(out.glob("*_pred.tif"))


def test_terratorch_cli_options_without_a_counterpart_say_what_to_do(tmp_path, capsys):
    """``--output_file_prefix`` (TerraTorch's predict option) is refused before anything runs, with what is written
    instead; in a config file too."""
    cfg = tmp_path / "tt.yaml"
    cfg.write_text(TERRATORCH_CONFIG.format(root=tmp_path, data=tmp_path / "s1f11"))
    assert main(["predict", "--config", str(cfg), "--output_file_prefix", "flood"]) != 0
    err = capsys.readouterr().err
    assert "--output_file_prefix has no counterpart: outputs are named" in err and "Traceback" not in err
    raw = yaml.safe_load(cfg.read_text())
    raw["deploy_config_file"] = False
    cfg.write_text(yaml.safe_dump(raw))
    assert main(["fit", "--config", str(cfg)]) != 0
    assert "deploy_config_file: TerraTorch's --deploy_config_file has no counterpart" in capsys.readouterr().err
