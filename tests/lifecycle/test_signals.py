"""SIGTERM / SIGINT as ``timeout``, ``scancel``, Kubernetes and Ctrl-C send them, to the real command."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cli_configs import FAST_TRAINER, TINY_MODEL_ARGS, sen1floods11_config, write
from terramind_ft.data.synthetic import make_scene

pytestmark = pytest.mark.slow


def _start(args: list[str], cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "terramind_ft.cli", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(condition, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    end = time.time() + timeout
    while time.time() < end:
        if condition():
            return
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the command ended (code {proc.returncode}) before the signal could be sent:\n{err[-3000:]}")
        time.sleep(0.05)
    proc.kill()
    pytest.fail("timed out waiting for the command to get going")


def _stopped_within(proc: subprocess.Popen, seconds: float) -> tuple[int, str]:
    start = time.time()
    try:
        _, err = proc.communicate(timeout=seconds)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"still running {seconds} s after the signal")
    return proc.returncode, err + f"\n[stopped after {time.time() - start:.1f} s]"


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_predict_of_a_large_scene_stops_within_seconds_and_leaves_no_partial_output(tmp_path, signum):
    scene = make_scene(tmp_path / "scene", height=1536, width=1536, modalities=("S2L1C", "S1GRD"), label=False)
    out = tmp_path / "preds"
    config = {
        "trainer": {**FAST_TRAINER, "default_root_dir": str(tmp_path / "run")},
        "data": {"class_path": "GenericMultiModalDataModule", "init_args": {
            "modalities": ["S2L1C", "S1GRD"], "task": "segmentation", "batch_size": 1, "num_classes": 2,
            "predict_data_root": scene.data_roots, "image_grep": "*.tif"}},
        "model": {"class_path": "SemanticSegmentationTask", "init_args": {
            "model_args": dict(TINY_MODEL_ARGS), "tiled_inference_parameters": {"crop": 64, "stride": 48}}},
    }
    proc = _start(["predict", "--config", write(config, tmp_path / "p.yaml"), "--predict_output_dir", str(out)],
                  tmp_path)
    _wait_for(lambda: out.is_dir() and any(p.name.startswith(".") for p in out.iterdir()), proc)
    time.sleep(0.5)
    proc.send_signal(signum)
    code, err = _stopped_within(proc, 15)
    assert code == 128 + signum, err
    assert f"interrupted by {signal.Signals(signum).name}" in err and "Traceback" not in err
    assert list(out.iterdir()) == [], "partial or unfinished outputs were left behind"


def test_sigterm_during_fit_saves_last_and_a_rerun_resumes(tmp_path):
    config = sen1floods11_config(tmp_path)
    config["trainer"]["max_epochs"] = 1000
    cfg = write(config, tmp_path / "c.yaml")
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    proc = _start(["fit", "--config", cfg], tmp_path)
    _wait_for(last.is_file, proc, timeout=180)
    first = torch.load(last, weights_only=True)["global_step"]
    _wait_for(lambda: torch.load(last, weights_only=True)["global_step"] > first, proc, timeout=60)
    proc.send_signal(signal.SIGTERM)
    code, err = _stopped_within(proc, 30)
    assert code == 143, err
    assert "last.ckpt saved" in err and "--ckpt_path last" in err, err
    stopped = torch.load(last, weights_only=True)
    assert stopped["global_step"] > first
    assert not (tmp_path / "run" / ".terramind-ft.lock").exists()
    # the same command again is refused (the folder has a run); with --ckpt_path last it goes on from there
    again = subprocess.run([sys.executable, "-m", "terramind_ft.cli", "fit", "--config", cfg, "--ckpt_path", "last",
                            f"--trainer.max_epochs={stopped['epoch'] + 2}"], cwd=tmp_path, capture_output=True,
                           text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    resumed = torch.load(last, weights_only=True)
    assert resumed["global_step"] > stopped["global_step"] and resumed["epoch"] == stopped["epoch"] + 1
