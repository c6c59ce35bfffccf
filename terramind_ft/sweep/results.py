"""Sweep results: one row per trial (csv + markdown), and ``best.yaml``, a ready-to-run training config.

A trial's config is the base config with the sweep's fixed overrides and the trial's values applied
(:func:`apply_overrides`); the same function writes ``<run_dir>/trial_config.yaml`` before the trial
runs and, from the best trial's values, ``best.yaml``.
"""

from __future__ import annotations

import copy
import csv
import io
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.trial import FrozenTrial, TrialState

from terramind_ft.sweep.search import config_params, describe_trial_times, heartbeat_age, is_stale, superseded
from terramind_ft.sweep.spec import SweepSpec, load_yaml
from terramind_ft.io import atomic_write_text

TRIAL_CONFIG_FILE = "trial_config.yaml"
ROOT_DIR_KEY = "trainer.default_root_dir"
BEST_RUN_DIR = "best"  # <output_dir>/best: where `terramind-ft fit --config best.yaml` trains the winner


# --------------------------------------------------------------------------------------------------------
# Configs


def _place(cfg: dict[str, Any], key: str, value: Any, create_class_nodes: bool) -> bool:
    """Set dotted ``key`` in nested ``cfg``. Missing plain sections are created; a missing ``init_args`` or
    ``class_path`` level is created only when ``create_class_nodes`` (a bare ``init_args`` without its
    ``class_path`` would not parse). Returns False when the key cannot be placed."""
    parts = key.split(".")
    node: Any = cfg
    for i, part in enumerate(parts[:-1]):
        if not isinstance(node, dict):
            return False
        if part not in node or node[part] is None:
            if not create_class_nodes and any(p in ("init_args", "class_path") for p in parts[i:]):
                return False
            node[part] = {}
        node = node[part]
    if not isinstance(node, dict):
        return False
    node[parts[-1]] = copy.deepcopy(value)
    return True


def apply_overrides(spec: SweepSpec, values: Mapping[str, Any]) -> dict[str, Any]:
    """The base config with ``values`` (dotted keys) applied, as the base YAML spells it where possible.

    When a key runs through something the base YAML writes in short form (``optimizer: AdamW``) or leaves
    to a default, the values are applied to the resolved base config (``--print_config`` of the base,
    written when the sweep was checked), which spells out every ``class_path``/``init_args`` level.
    """
    raw = load_yaml(spec.base_config) or {}
    cfg = copy.deepcopy(raw)
    if all(_place(cfg, k, v, create_class_nodes=False) for k, v in values.items()):
        return cfg
    source = spec.resolved_base_path if spec.resolved_base_path.exists() else None
    cfg = copy.deepcopy(load_yaml(source)) if source else copy.deepcopy(raw)
    for k, v in values.items():
        if not _place(cfg, k, v, create_class_nodes=True):
            raise ValueError(f"cannot place config key {k!r} in {source or spec.base_config}")
    return cfg


def write_yaml(path: Path, cfg: Mapping[str, Any], header: str) -> Path:
    comment = "".join(f"# {line}\n" for line in header.splitlines())
    atomic_write_text(path, comment + yaml.safe_dump(dict(cfg), sort_keys=False, default_flow_style=False))
    return path


def write_trial_config(spec: SweepSpec, number: int, values: Mapping[str, Any], run_dir: Path) -> Path:
    cfg = apply_overrides(spec, {**values, ROOT_DIR_KEY: str(run_dir)})
    header = (f"trial {number} of sweep {spec.study.name!r} ({spec.path})\n"
              f"base config {spec.base_config} with the sweep's overrides and this trial's values")
    return write_yaml(run_dir / TRIAL_CONFIG_FILE, cfg, header)


# --------------------------------------------------------------------------------------------------------
# Table


@dataclass(frozen=True)
class Results:
    rows: list[dict[str, Any]]
    csv_path: Path
    markdown_path: Path
    best_path: Path | None
    best_trial: FrozenTrial | None

    @property
    def markdown(self) -> str:
        return self.markdown_path.read_text()


def best_trial(spec: SweepSpec, study: optuna.Study) -> FrozenTrial | None:
    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if t.value is not None and math.isfinite(t.value)]
    if not done:
        return None
    pick = max if spec.study.direction == "maximize" else min
    return pick(done, key=lambda t: (t.value, -t.number))


def collect_rows(spec: SweepSpec, study: optuna.Study) -> list[dict[str, Any]]:
    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    gone = superseded(trials)
    retried_as = {int(t.user_attrs["retry_of"]): t.number for t in trials if "retry_of" in t.user_attrs}
    rows = []
    for t in trials:
        state = t.state.name
        notes = []
        if t.number in gone:
            state = "INTERRUPTED" if "error" not in t.user_attrs else state
            notes.append(f"re-run as trial {retried_as[t.number]}")
        if "retry_of" in t.user_attrs:
            notes.append(f"re-run of trial {t.user_attrs['retry_of']} ({t.user_attrs.get('retry_reason', '')})")
        if t.state == TrialState.RUNNING:
            age, stopped = heartbeat_age(t.user_attrs.get("run_dir"))
            if is_stale(spec, t):
                notes.append("stale: its worker is gone; re-running the sweep resumes it")
            elif age is not None:
                notes.append(f"heartbeat {age:.0f} s ago")
        if t.state == TrialState.PRUNED and t.intermediate_values:
            notes.append(f"pruned after epoch {max(t.intermediate_values)}")
        duration = describe_trial_times(t)
        row: dict[str, Any] = {"trial": t.number, "state": state, spec.study.metric: t.value}
        params = config_params(spec, t)
        for d in spec.search_space:
            row[d.key] = params.get(d.key)
        row.update({
            "duration_s": None if duration is None else round(duration, 1),
            "run_dir": t.user_attrs.get("run_dir", ""),
            "error": t.user_attrs.get("error", ""),
            "note": "; ".join(notes),
        })
        rows.append(row)
    return rows


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def to_markdown(rows: list[dict[str, Any]], columns: list[str]) -> str:
    def esc(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for row in rows:
        cells = [esc(_cell(row.get(c))) for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_results(spec: SweepSpec, study: optuna.Study) -> Results:
    """Write ``results.csv``, ``results.md`` and (when a trial completed) ``best.yaml`` into the output dir."""
    rows = collect_rows(spec, study)
    columns = ["trial", "state", spec.study.metric, *[d.key for d in spec.search_space],
               "duration_s", "run_dir", "error", "note"]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: ("" if row.get(c) is None else row.get(c)) for c in columns})
    csv_path = spec.output_dir / "results.csv"
    md_path = spec.output_dir / "results.md"
    atomic_write_text(csv_path, buf.getvalue())

    best = best_trial(spec, study)
    md_columns = [c for c in columns if c != "run_dir"]
    title = (f"# Sweep {spec.study.name}: {spec.study.metric} ({spec.study.direction}), "
             f"{sum(r['state'] == 'COMPLETE' for r in rows)} complete of {spec.budget} trials\n\n")
    best_line = ""
    best_path = None
    if best is not None:
        values = {**spec.overrides, **config_params(spec, best)}
        cfg = apply_overrides(spec, values)
        # The winner trains in the sweep's own folder: not a trial's, and not the base config's run folder (which
        # may hold another run, and which fit would then refuse).
        _place(cfg, ROOT_DIR_KEY, str(spec.output_dir / BEST_RUN_DIR), create_class_nodes=False)
        header = (f"best trial {best.number} of sweep {spec.study.name!r}: {spec.study.metric} = {best.value:.6g} "
                  f"({spec.study.direction})\n"
                  f"base config {spec.base_config} with these values:\n"
                  + "\n".join(f"  {k}: {v}" for k, v in values.items())
                  + "\nrun it with: terramind-ft fit --config best.yaml")
        best_path = write_yaml(spec.output_dir / "best.yaml", cfg, header)
        best_line = f"Best: trial {best.number}, {spec.study.metric} = {best.value:.6g}; config: {best_path}\n\n"
    atomic_write_text(md_path, title + best_line + to_markdown(rows, md_columns))
    return Results(rows=rows, csv_path=csv_path, markdown_path=md_path, best_path=best_path, best_trial=best)
