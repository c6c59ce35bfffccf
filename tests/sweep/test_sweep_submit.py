"""Job planning and submission: the SLURM path up to ``sbatch`` (a fake one records the script), GPU
pinning of local workers, and the DDP sbatch template."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from terramind_ft import cli
from terramind_ft.sweep.search import open_study
from terramind_ft.sweep.spec import load_spec

REPO = Path(__file__).resolve().parents[2]
TRAIN_SBATCH = REPO / "scripts" / "slurm" / "train.sbatch"


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    """``sbatch`` that copies the submitted script into ``record/`` and answers with a job id; ``srun`` on
    PATH so that submitit believes it is on a cluster."""
    bin_dir, record = tmp_path / "bin", tmp_path / "record"
    bin_dir.mkdir()
    record.mkdir()
    (bin_dir / "sbatch").write_text(
        f'#!/bin/sh\nn=$(ls "{record}" | wc -l)\ncp "$1" "{record}/submitted_$n.sh"\n'
        'echo "Submitted batch job 4242"\n')
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    for tool in ("sbatch", "srun"):
        (bin_dir / tool).chmod((bin_dir / tool).stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return record


def test_slurm_sweep_submits_one_job_array(toy_sweep, fake_slurm, capsys):
    path = toy_sweep(study={"n_trials": 5}, launcher={
        "cluster": "slurm", "timeout_min": 90, "gpus_per_trial": 1, "cpus_per_trial": 6, "mem_gb": 16,
        "setup": ["module load cuda/12.4", "source /shared/venv/bin/activate"],
        "slurm": {"partition": "gpu", "account": "proj42", "qos": "normal", "array_parallelism": 2,
                  "signal_delay_s": 120, "extra_sbatch": ["--exclusive", "--mail-type=END"]}})
    assert cli.main(["sweep", "--config", str(path), "--skip-check"]) == 0

    scripts = sorted(fake_slurm.iterdir())
    assert len(scripts) == 1  # one sbatch call: an array, not five jobs
    text = scripts[0].read_text()
    flags = dict(re.findall(r"^#SBATCH --([\w-]+)(?:=(.*))?$", text, re.M))
    assert flags["partition"] == "gpu"
    assert flags["account"] == "proj42"
    assert flags["qos"] == "normal"
    assert flags["time"] == "90"
    assert flags["gpus-per-node"] == "1"
    assert flags["cpus-per-task"] == "6"
    assert flags["mem"] == "16GB"
    assert flags["ntasks-per-node"] == "1" and flags["nodes"] == "1"
    assert flags["array"] == "0-4%2"  # n_trials workers, at most 2 at once
    assert flags["signal"] == "USR2@120"  # submitit's requeue signal, 120 s before the limit
    assert flags["exclusive"] == "" and flags["mail-type"] == "END"
    assert flags["job-name"] == "sweep-toy"
    setup = text.index("module load cuda/12.4")
    assert setup < text.index("source /shared/venv/bin/activate") < text.index("srun")
    assert "-m submitit.core._submit" in text

    out = capsys.readouterr().out
    assert "4242_0" in out and "4242_4" in out
    assert "terramind-ft sweep --status --config" in out
    spec = load_spec(path)
    # Five pickled workers wait for the array tasks; nothing ran here.
    assert len(list((spec.output_dir / "submitit").glob("4242_*/*submitted.pkl"))) == 5
    assert open_study(spec, create=False).get_trials() == []


def test_slurm_workers_default_to_one_trial_each(toy_sweep, fake_slurm):
    from terramind_ft.sweep.launch import _default_trials_per_worker, plan_workers

    spec = load_spec(toy_sweep(study={"n_trials": 7},
                               launcher={"cluster": "slurm", "timeout_min": 10, "workers": 3}))
    assert _default_trials_per_worker(spec) == 1
    assert [w["index"] for w in plan_workers(spec, work=7)] == [0, 1, 2]
    assert len(plan_workers(spec, work=2)) == 2  # never more workers than trials left


def test_local_workers_get_one_gpu_each(toy_sweep, monkeypatch):
    from terramind_ft.sweep.launch import _default_trials_per_worker, plan_workers

    spec = load_spec(toy_sweep(launcher={"cluster": "local", "gpus_per_trial": 1, "gpus": [2, 3, 5]}))
    assert _default_trials_per_worker(spec) is None  # local workers loop until the budget is spent
    assert plan_workers(spec, work=10) == [{"index": 0, "gpus": (2,)}, {"index": 1, "gpus": (3,)},
                                           {"index": 2, "gpus": (5,)}]
    assert len(plan_workers(spec, work=1)) == 1
    # Without launcher.gpus the visible GPUs are CUDA_VISIBLE_DEVICES (ids of this machine, not 0..n-1).
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,6")
    spec = load_spec(toy_sweep(launcher={"cluster": "local", "gpus_per_trial": 1}))
    assert [w["gpus"] for w in plan_workers(spec, work=5)] == [(4,), (6,)]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert plan_workers(spec, work=5) == [{"index": 0, "gpus": ()}]  # no GPU: one CPU worker, with a warning
    cpu = load_spec(toy_sweep(launcher={"cluster": "local", "workers": 2}))
    assert plan_workers(cpu, work=5) == [{"index": 0, "gpus": ()}, {"index": 1, "gpus": ()}]


def test_train_sbatch_template_is_consistent():
    text = TRAIN_SBATCH.read_text()
    subprocess.run(["bash", "-n", str(TRAIN_SBATCH)], check=True)
    flags = dict(re.findall(r"^#SBATCH --([\w-]+)(?:=(\S*))?$", text, re.M))
    # One task per GPU, Lightning owns the requeue (USR1 to every task, not only the batch shell).
    assert flags["ntasks-per-node"] == flags["gpus-per-node"]
    assert flags["signal"].startswith("SIGUSR1@")
    assert "requeue" in flags
    assert "srun" in text and "--trainer.num_nodes=\"${SLURM_NNODES}\"" in text
    assert "--trainer.devices=\"${SLURM_NTASKS_PER_NODE}\"" in text
    assert "--trainer.strategy=ddp" in text


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash not available")
def test_train_sbatch_runs_srun_with_the_allocation(tmp_path):
    """Run the template outside SLURM with a fake srun and the allocation's variables."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text('#!/bin/sh\nprintf "%s\\n" "$@" > "$SRUN_RECORD"\n')
    (bin_dir / "srun").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "SLURM_JOB_NAME": "tm",
           "SLURM_JOB_ID": "77", "SLURM_NNODES": "2", "SLURM_NTASKS_PER_NODE": "4",
           "SRUN_RECORD": str(tmp_path / "srun.txt")}
    subprocess.run(["bash", str(TRAIN_SBATCH), "cfg.yaml", "--trainer.max_epochs=3"], cwd=tmp_path, env=env,
                   check=True, capture_output=True)
    args = (tmp_path / "srun.txt").read_text().split("\n")
    assert args[:5] == ["--kill-on-bad-exit=1", "terramind-ft", "fit", "--config", "cfg.yaml"]
    assert "--trainer.num_nodes=2" in args and "--trainer.devices=4" in args
    assert "--trainer.default_root_dir=runs/tm-77" in args
    assert "--ckpt_path=last" in args and "--trainer.max_epochs=3" in args
    # After Lightning's own requeue the hpc checkpoint wins: no --ckpt_path.
    (tmp_path / "runs" / "tm-77" / "hpc_ckpt_1.ckpt").write_text("x")
    subprocess.run(["bash", str(TRAIN_SBATCH), "cfg.yaml"], cwd=tmp_path, env=env, check=True, capture_output=True)
    assert "--ckpt_path=last" not in (tmp_path / "srun.txt").read_text()


def test_lightning_slurm_requeue_is_switched_off_in_trials(monkeypatch):
    """Inside a SLURM array task Lightning detects SLURM; submitit must stay the only requeue owner."""
    from lightning.fabric.plugins.environments import SLURMEnvironment
    from lightning.pytorch import Trainer

    from terramind_ft.sweep.launch import _hand_requeue_to_submitit

    for key, value in {"SLURM_NTASKS": "1", "SLURM_NTASKS_PER_NODE": "1", "SLURM_JOB_NAME": "sweep-x",
                       "SLURM_JOB_ID": "9", "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NODEID": "0",
                       "SLURM_NODELIST": "node1"}.items():
        monkeypatch.setenv(key, value)
    trainer = Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False)
    env = trainer._accelerator_connector.cluster_environment
    assert isinstance(env, SLURMEnvironment) and env.auto_requeue
    _hand_requeue_to_submitit(trainer)
    assert env.auto_requeue is False
