"""Fixtures of the sweep tests: a toy LightningCLI program (sweep_toy_cli) and sweep files around it."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


def _deep_update(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in changes.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and not k == "search_space":
            out[k] = _deep_update(out[k], v)
        else:
            out[k] = v
    return out


TOY_SWEEP: dict[str, Any] = {
    "base_config": "base.yaml",
    "cli": "sweep_toy_cli:build_cli",
    "output_dir": "out",
    "study": {"name": "toy", "metric": "val/score", "direction": "max", "n_trials": 3, "sampler": "random",
              "seed": 0},
    "search_space": {
        "optimizer.init_args.lr": {"type": "float", "low": 1e-3, "high": 1e-1, "log": True},
        "model.hidden": [4, 8, 16],
    },
    "launcher": {"cluster": "debug"},
}


@pytest.fixture
def toy_sweep(tmp_path, monkeypatch):
    """``make(**changes) -> Path`` writes base.yaml and sweep.yaml (TOY_SWEEP updated by ``changes``)."""
    import sweep_toy_cli

    monkeypatch.chdir(tmp_path)
    # Subprocess workers (local executor) must import the toy program and this checkout.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(HERE), str(REPO), os.environ.get("PYTHONPATH", "")]))
    (tmp_path / "base.yaml").write_text(sweep_toy_cli.BASE_CONFIG)

    def make(name: str = "sweep.yaml", **changes: Any) -> Path:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(_deep_update(TOY_SWEEP, changes), sort_keys=False))
        return path

    return make
