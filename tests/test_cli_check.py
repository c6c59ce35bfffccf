"""``terramind-ft check``: a good config passes every step; a broken one names the bad key (and the fix)."""

from __future__ import annotations

import copy

import pytest

from cli_configs import sen1floods11_config, write
from terramind_ft.cli import main


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("check")
    return tmp, sen1floods11_config(tmp)


def test_good_config_passes_all_steps(good, capsys):
    tmp, config = good
    assert main(["check", "--config", write(config, tmp / "good.yaml")]) == 0
    out = capsys.readouterr().out
    for step in ("[config]", "[monitors]", "[data]", "[train batch]", "[val batch]", "[check] passed"):
        assert step in out, out
    assert "ModelCheckpoint).monitor = val/mIoU" in out
    assert not (tmp / "run").exists(), "check must not write a run folder"


def _break(config, path, value=None, rename=None):
    config = copy.deepcopy(config)
    node = config
    for k in path[:-1]:
        node = node[k]
    if rename:
        node[rename] = node.pop(path[-1])
    else:
        node[path[-1]] = value
    return config


@pytest.mark.parametrize("path,value,rename,expected", [
    (["model", "init_args", "loss"], None, "losss",
     "model.init_args.losss: SemanticSegmentationTask has no argument 'losss'. Did you mean 'loss'"),
    (["trainer", "max_epochs"], None, "max_epoch", "trainer.max_epoch: Trainer has no argument 'max_epoch'"),
    (["model", "init_args", "model_args", "decoder_channels"], None, "decoder_channel",
     "model.init_args.model_args.decoder_channel: decoder 'UNetDecoder' has no argument 'channel'"),
    (["model", "init_args", "model_args", "decoder"], "UnetDecoder", None,
     "model.init_args.model_args.decoder: unknown decoder 'UnetDecoder'. Did you mean 'UNetDecoder'"),
    (["data", "init_args", "batch_size"], "two", None, "data.init_args.batch_size: Expected a <class 'int'>"),
    (["model", "class_path"], "SemanticSegmentationTsk", None, "model.class_path: unknown class"),
    (["lr_scheduler"], {"class_path": "ReduceLROnPlateau", "init_args": {"monitor": "val/Multiclass_Jaccard_Index"}},
     None, "lr_scheduler.init_args.monitor: monitors 'val/Multiclass_Jaccard_Index', which no metric produces"),
    (["trainer", "callbacks"], [{"class_path": "EarlyStopping", "init_args": {"monitor": "val/miou"}}], None,
     "(EarlyStopping).monitor: monitors 'val/miou', which no metric produces. Did you mean 'val/mIoU'"),
    (["trainerr"], {}, None, "trainerr: unknown top-level key. Did you mean 'trainer'"),
])
def test_broken_config_points_at_the_bad_key(good, capsys, path, value, rename, expected):
    tmp, config = good
    bad = write(_break(config, path, value, rename), tmp / "bad.yaml")
    assert main(["check", "--config", bad, "--skip-data"]) == 1
    out = capsys.readouterr().out
    assert "FAILED: config error at " + expected in out or expected in out, out
    assert "FAILED" in out and "Does not validate against any of the Union subtypes" not in out


def test_missing_data_folder_is_reported_with_its_key(good, capsys):
    tmp, config = good
    bad = copy.deepcopy(config)
    bad["data"]["init_args"]["train_data_root"]["S1GRD"] = str(tmp / "nowhere")
    assert main(["check", "--config", write(bad, tmp / "bad_data.yaml")]) == 1
    out = capsys.readouterr().out
    assert "[data] FAILED" in out and "train_data_root.S1GRD" in out and "nowhere" in out


def test_print_config_round_trips(good, capsys, tmp_path):
    """``fit --print_config`` prints a complete config that runs as it is (full class paths, defaults filled)."""
    tmp, config = good
    assert main(["fit", "--config", write(config, tmp / "p.yaml"), "--print_config"]) == 0
    printed = capsys.readouterr().out
    assert "class_path: terramind_ft.tasks.SemanticSegmentationTask" in printed
    (tmp_path / "printed.yaml").write_text(printed)
    assert main(["check", "--config", str(tmp_path / "printed.yaml"), "--skip-data"]) == 0


REVERSED_S2L2A = ("[SWIR_2, SWIR_1, WATER_VAPOR, NIR_NARROW, NIR_BROAD, RED_EDGE_3, RED_EDGE_2, RED_EDGE_1, RED, "
                  "GREEN, BLUE, COASTAL_AEROSOL]")


def test_data_bands_in_another_order_than_the_backbone_takes_are_refused_before_training(tmp_path, capsys,
                                                                                          monkeypatch):
    """output_bands reorders the data's channels; the backbone's patch embedding has its own order
    (backbone_bands, default the pretrained one). Without both, every channel is read as another band."""
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(repo)  # the quickstart's data paths are relative to the repository
    quickstart = ["--config", "configs/quickstart.yaml", "--trainer.default_root_dir", str(tmp_path / "run")]
    reordered = ["--data.init_args.output_bands", f"{{S2L2A: {REVERSED_S2L2A}}}"]
    assert main(["check", *quickstart, "--skip-data", *reordered]) == 1
    out = capsys.readouterr().out
    assert "[bands] FAILED: config error at model.init_args.model_args.backbone_bands.S2L2A" in out
    assert "the same bands in another order" in out and "Give backbone_bands.S2L2A and output_bands the same" in out

    assert main(["fit", *quickstart, *reordered, "--trainer.max_epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert "terramind-ft: config error: model.init_args.model_args.backbone_bands.S2L2A:" in err
    assert not (tmp_path / "run" / "checkpoints").exists(), "refused before training"

    swapped = ["--data.init_args.output_bands", "{S1RTC: [VH, VV]}"]
    assert main(["check", *quickstart, "--skip-data", *swapped]) == 1
    assert "the data gives S1RTC the bands ['VH', 'VV']" in capsys.readouterr().out
    both = [*swapped, "--model.init_args.model_args.backbone_bands", "{S1RTC: [VH, VV]}"]
    assert main(["check", *quickstart, "--skip-data", *both]) == 0
    assert "[bands] S1RTC: 2 bands, the backbone's order" in capsys.readouterr().out
