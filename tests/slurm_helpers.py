"""Helpers of the tests that drive the local SLURM (scripts/slurm/local_cluster.sh)."""

from __future__ import annotations

import subprocess
import time


def wait_for(condition, timeout_s: float, what: str) -> None:
    end = time.time() + timeout_s
    while not condition():
        if time.time() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.5)


def start_requeued_job_now(job_id: str, timeout_s: float = 120) -> None:
    """SLURM holds a requeued job for two minutes before it may start again; let it start at once."""
    def pending() -> bool:
        out = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True).stdout
        return "PENDING" in out

    wait_for(pending, timeout_s, f"job {job_id} to be requeued")
    subprocess.run(["scontrol", "update", f"jobid={job_id}", "starttime=now"], check=True)


def job_state(job_id: str) -> str:
    out = subprocess.run(["sacct", "-n", "-X", "-P", "-o", "State", "-j", job_id], capture_output=True, text=True)
    return out.stdout.strip().splitlines()[-1] if out.stdout.strip() else ""
