"""scripts/slurm/train.sbatch on a real SLURM (scripts/slurm/local_cluster.sh) with two CPU processes (gloo): it
trains and resumes after Lightning's requeue. Skipped with the reason when that SLURM is not running."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import torch
import yaml

from cli_configs import sen1floods11_config
from slurm_helpers import job_state, start_requeued_job_now, wait_for

REPO = Path(__file__).resolve().parents[2]
TRAIN_SBATCH = REPO / "scripts" / "slurm" / "train.sbatch"

pytestmark = [pytest.mark.slurm, pytest.mark.slow,
              pytest.mark.usefixtures("slurm_cluster", "slurm_jobs_cancelled_after")]


def test_train_sbatch_with_two_cpu_processes_resumes_after_a_requeue(tmp_path):
    config = sen1floods11_config(tmp_path)
    config["trainer"].pop("default_root_dir")
    config["trainer"].update(limit_train_batches=None, limit_val_batches=None, max_epochs=4)
    config["data"]["init_args"]["batch_size"] = 1  # 4 samples on 2 ranks: 2 steps per epoch
    cfg = tmp_path / "ddp.yaml"
    cfg.write_text(yaml.safe_dump(config, sort_keys=False))
    run_dir = tmp_path / "run"
    env = {**os.environ, "ACCELERATOR": "cpu", "RUN_DIR": str(run_dir), "OMP_NUM_THREADS": "1"}
    job = subprocess.run(["sbatch", "--parsable", "--nodes=1", "--ntasks-per-node=2", "--gpus-per-node=0",
                          "--cpus-per-task=1", "--time=15", f"--output={tmp_path}/train-%j.out", str(TRAIN_SBATCH),
                          str(cfg)], cwd=tmp_path, env=env, capture_output=True, text=True, check=True
                         ).stdout.strip().split(";")[0]
    wait_for(lambda: (run_dir / "checkpoints" / "last.ckpt").exists(), 240, "the first epoch")
    # what SLURM sends before the time limit (#SBATCH --signal=SIGUSR1@90): both ranks agree at a batch end, save
    # last.ckpt, rank 0 requeues the job, which resumes from it in the same run folder (Lightning's own handler saved
    # at the moment the signal landed, and that once deadlocked the two ranks)
    subprocess.run(["scancel", "--signal=USR1", job], check=True)
    start_requeued_job_now(job)
    wait_for(lambda: job_state(job) == "COMPLETED", 400, f"job {job} after its requeue")
    log = (tmp_path / f"train-{job}.out").read_text()
    assert "(restart 1)" in log, log[-3000:]
    assert "fit done: 4 epoch(s)" in log, log[-3000:]
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
    assert ckpt["global_step"] == 8  # 4 epochs x 2 steps: none lost, none repeated
    assert "requeued SLURM job" in log and "saved" in log and "SIGUSR1" in log
