"""Shared fixtures. Tests write only into tmp_path; nothing touches the network."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"
TERRAMESH_DIR = SHARED / "data" / "terramesh_examples"


def ref_dir() -> Path:
    """Reference fixtures directory ($TERRAMIND_REF_DIR, default ../shared/fixtures/terramind_ref)."""
    return Path(os.environ.get("TERRAMIND_REF_DIR", SHARED / "fixtures" / "terramind_ref"))


@pytest.fixture(scope="session")
def terramind_ref() -> Path:
    path = ref_dir()
    if not (path / "cases.json").exists():
        pytest.skip(f"TerraMind reference fixtures not found at {path}; set TERRAMIND_REF_DIR to the folder "
                    "holding cases.json and golden_TerraMind_v1_tiny_subset.pt")
    return path


@pytest.fixture(scope="session")
def terramesh_dir() -> Path:
    if not TERRAMESH_DIR.exists():
        pytest.skip(f"real TerraMesh chips not found at {TERRAMESH_DIR}")
    return TERRAMESH_DIR


@pytest.fixture(scope="session")
def slurm_cluster() -> None:
    """The local SLURM of scripts/slurm/local_cluster.sh (``.ci/run`` starts it); skip with the reason if it is down."""
    import subprocess

    script = REPO_ROOT / "scripts" / "slurm" / "local_cluster.sh"
    status = subprocess.run(["bash", str(script), "status"], capture_output=True, text=True)
    if status.returncode != 0:
        pytest.skip(f"no local SLURM ({(status.stderr or status.stdout).strip()}); start one with: bash "
                    "scripts/slurm/local_cluster.sh start (needs root and Debian's packages)")


@pytest.fixture
def slurm_jobs_cancelled_after(slurm_cluster):
    """Cancel the SLURM jobs a test leaves behind (a failed or interrupted test must not hold the node)."""
    import subprocess

    def jobs() -> set[str]:
        out = subprocess.run(["squeue", "-h", "-o", "%A"], capture_output=True, text=True).stdout
        return set(out.split())

    before = jobs()
    yield
    left = sorted(jobs() - before)
    if left:
        subprocess.run(["scancel", *left], capture_output=True)


@pytest.fixture(autouse=True)
def _offline_and_seeded(monkeypatch, tmp_path):
    """No test may reach the network or write into a shared cache."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    torch.manual_seed(0)


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A copy of the repository's ``examples/`` and ``configs/`` as the working directory: the bundled configs run
    as a user runs them from a clone, with their relative paths."""
    shutil.copytree(REPO_ROOT / "examples", tmp_path / "examples")
    shutil.copytree(REPO_ROOT / "configs", tmp_path / "configs")
    monkeypatch.chdir(tmp_path)
    return tmp_path
