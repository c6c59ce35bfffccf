"""Readers of a finished sweep shared by the sweep tests: the study's trials and the results table."""

from __future__ import annotations

import csv

from terramind_ft.sweep.search import open_study


def study_trials(spec):
    """Every trial of the sweep's study, by number."""
    return sorted(open_study(spec, create=False).get_trials(), key=lambda t: t.number)


def result_rows(spec):
    """The rows of the sweep's results.csv as dicts."""
    with open(spec.output_dir / "results.csv") as f:
        return list(csv.DictReader(f))
