"""The README's quick sweep: TerraMind v1 tiny on generated Sen1Floods11 chips, through the real CLI."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest
import yaml

from terramind_ft import cli
from terramind_ft.data.synthetic import make_sen1floods11
from terramind_ft.errors import ConfigError
from terramind_ft.cli.app import build_cli
from terramind_ft.sweep.search import open_study
from terramind_ft.sweep.spec import check_against_cli, load_spec

REPO = Path(__file__).resolve().parents[2]
TINY_SWEEP = "configs/sweeps/sen1floods11_lr_tiny.yaml"


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A project folder as the README assumes: configs/ and data/sen1floods11_v1.1 (64 px generated chips)."""
    monkeypatch.chdir(tmp_path)
    shutil.copytree(REPO / "configs", tmp_path / "configs")
    make_sen1floods11(tmp_path / "data" / "sen1floods11_v1.1", layout="terramind", size=64)
    return tmp_path


@pytest.mark.slow  # 3 TerraMind-tiny trials (one epoch of 4 batches): ~40 s on an idle 2-core CPU
def test_readme_tiny_sweep_gives_table_and_runnable_best_config(project, capsys):
    # The README command, in this process (--launcher debug; the local executor is covered by test_sweep_local).
    assert cli.main(["sweep", "--config", TINY_SWEEP, "--launcher", "debug"]) == 0
    spec = load_spec(TINY_SWEEP)
    assert spec.output_dir == project / "runs" / "sweeps" / "sen1floods11_lr_tiny"

    with open(spec.output_dir / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["state"] for r in rows] == ["COMPLETE"] * 3
    for row in rows:
        assert 0.0 <= float(row["val/mIoU"]) <= 1.0
        assert row["model.init_args.model_args.backbone"] in ("terramind_v1_tiny", "terramind_v1_tiny_tim")
        run_dir = Path(row["run_dir"])
        for name in ("checkpoints/last.ckpt", "config.yaml", "trial_config.yaml", "metrics.json"):
            assert (run_dir / name).is_file(), name
        trial_cfg = yaml.safe_load((run_dir / "trial_config.yaml").read_text())
        assert trial_cfg["optimizer"]["init_args"]["lr"] == pytest.approx(float(row["optimizer.init_args.lr"]))
    assert "| trial | state | val/mIoU |" in (spec.output_dir / "results.md").read_text()
    assert len({r["val/mIoU"] for r in rows}) > 1  # the demo's table shows trials that differ (it once did not)

    best = max(open_study(spec, create=False).get_trials(), key=lambda t: t.value)
    best_cfg = yaml.safe_load((spec.output_dir / "best.yaml").read_text())
    model_args = best_cfg["model"]["init_args"]["model_args"]
    assert model_args["backbone"] == best.params["model.init_args.model_args.backbone"]
    assert model_args["backbone_pretrained"] is False and model_args["decoder"] == "UNetDecoder"
    assert best_cfg["optimizer"]["init_args"]["lr"] == best.params["optimizer.init_args.lr"]
    # the sweep's own folder: not a trial's, and not the base config's run folder (which may hold another run)
    assert best_cfg["trainer"]["default_root_dir"] == str(spec.output_dir / "best")
    # best.yaml is a config the training CLI accepts as it is.
    with pytest.raises(SystemExit) as done:
        build_cli(["fit", "--config", str(spec.output_dir / "best.yaml"), "--print_config"], run=True)
    assert done.value.code in (0, None)


def test_typo_inside_model_args_is_caught_before_any_trial(project):
    path = project / "typo.yaml"
    raw = yaml.safe_load((project / TINY_SWEEP).read_text())
    raw["search_space"] = {"model.init_args.model_args.backbon": ["terramind_v1_tiny"]}
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError) as info:
        check_against_cli(load_spec(path), write=False)
    assert info.value.key == "search_space.model.init_args.model_args.backbon"
    assert "Did you mean 'model.init_args.model_args.backbone'" in str(info.value)
