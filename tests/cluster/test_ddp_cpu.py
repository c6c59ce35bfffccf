"""DDP across two CPU processes (Lightning ``strategy: ddp``, gloo), through the real command line.

fit -> test -> predict -> resume on generated 64 px data with the tiny model. The two-process run must give the
one-process run's test metrics (two test samples: no DistributedSampler padding), leave one run folder written
by rank 0 only, predict every input exactly once with a complete manifest, resume from last.ckpt, and stop both
ranks with the message when one rank's loss is NaN, instead of hanging in the next all-reduce.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import rasterio
import torch
import yaml

from cli_configs import sen1floods11_config

pytestmark = pytest.mark.slow

DDP = {"accelerator": "cpu", "devices": 2, "strategy": "ddp", "num_nodes": 1}


def _run(args: list[str], cwd, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "terramind_ft.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def _config(tmp_path, **trainer):
    config = sen1floods11_config(tmp_path)
    config["trainer"].update(DDP, **trainer)
    config["trainer"]["limit_train_batches"] = None  # 4 samples, batch 2, 2 ranks: one step per epoch
    config["trainer"]["limit_val_batches"] = None
    config["trainer"]["limit_test_batches"] = None
    path = tmp_path / "ddp.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return config, path


def _ok(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    config, cfg = _config(tmp)
    _ok(_run(["fit", "--config", str(cfg)], tmp))
    return tmp, config, cfg


def test_rank_zero_alone_writes_the_run_folder(ddp_run):
    tmp, _, _ = ddp_run
    run = tmp / "run"
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    assert sorted(p.name for p in (run / "previews").iterdir()) == ["epoch000_0.png"]
    assert [p.name for p in (run / "lightning_logs").iterdir()] == ["version_0"]
    assert (run / "config.yaml").is_file() and (run / "config_deploy.yaml").is_file()
    assert not (run / ".terramind-ft.lock").exists()  # released at the end
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
    assert ckpt["global_step"] == 1  # each rank took one batch of its half


def test_two_processes_give_the_metrics_of_one(ddp_run):
    tmp, _, cfg = ddp_run
    metrics_file = tmp / "run" / "checkpoints" / "metrics.json"
    # batch 1: a dice loss over a batch is not the mean of its samples' dice, so the loss (not the confusion-matrix
    # metrics) would differ between one batch of two samples and two processes of one sample each
    one_sample = "--data.init_args.batch_size=1"
    _ok(_run(["test", "--config", str(cfg), "--ckpt_path", "best", one_sample], tmp))
    two = json.loads(metrics_file.read_text())["metrics"]
    _ok(_run(["test", "--config", str(cfg), "--ckpt_path", "best", one_sample, "--trainer.devices=1",
              "--trainer.strategy=auto"], tmp))
    one = json.loads(metrics_file.read_text())["metrics"]
    assert two.keys() == one.keys() and "test/mIoU" in one
    for key in one:
        if one[key] is None:
            assert two[key] is None, key
        else:
            assert two[key] == pytest.approx(one[key], abs=1e-5), key


def test_predict_shards_the_inputs_and_writes_each_once(ddp_run):
    tmp, config, cfg = ddp_run
    out = tmp / "preds"
    _ok(_run(["predict", "--config", str(cfg), "--ckpt_path", "best", "--predict_output_dir", str(out)], tmp))
    manifest = json.loads((out / "predictions.json").read_text())
    roots = config["data"]["init_args"]["predict_data_root"]
    inputs = sorted(str(p) for p in (tmp / "data").rglob("*_S2Hand.tif") if str(p).startswith(roots["S2L1C"]))
    assert sorted(manifest) == inputs  # every input, from both ranks
    written = [p for paths in manifest.values() for p in paths]
    assert len(written) == len(set(written)) == len(inputs)
    assert sorted(str(p) for p in out.glob("*_pred.tif")) == sorted(written)
    with rasterio.open(written[0]) as src:
        assert src.read(1).shape == (64, 64)


def test_resume_from_last_under_ddp(ddp_run):
    tmp, _, cfg = ddp_run
    _ok(_run(["fit", "--config", str(cfg), "--ckpt_path", "last", "--trainer.max_epochs=2"], tmp))
    ckpt = torch.load(tmp / "run" / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
    assert ckpt["global_step"] == 2 and ckpt["epoch"] == 1  # the second epoch (0-based), one more step


def test_a_nan_loss_on_one_rank_stops_both_with_the_message(tmp_path):
    config, cfg = _config(tmp_path)
    config["data"]["init_args"]["no_data_replace"] = None  # NaN reaches the model
    bad = sorted((tmp_path / "data").rglob("*_S1Hand.tif"))[0]
    with rasterio.open(bad, "r+") as dst:  # one chip of NaN: one rank's batch, the other rank's is clean
        dst.write(np.full((dst.count, dst.height, dst.width), np.nan, dtype="float32"))
    split = config["data"]["init_args"]["train_split"]
    prefix = bad.name.split("_S1Hand")[0]
    lines = [line for line in open(split).read().splitlines() if line.strip()]
    open(split, "w").write("\n".join([prefix] + [x for x in lines if x != prefix][:3]) + "\n")
    config["data"]["init_args"]["batch_size"] = 1
    cfg.write_text(yaml.safe_dump(config, sort_keys=False))
    start = time.monotonic()
    result = _run(["fit", "--config", str(cfg)], tmp_path, timeout=240)
    assert result.returncode != 0
    assert "training loss is nan" in result.stderr and "NaN/inf" in result.stderr
    assert time.monotonic() - start < 200  # not the gloo timeout (30 min)
