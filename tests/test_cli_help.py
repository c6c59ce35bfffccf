"""`terramind-ft --help` lists the Lightning commands and our own, and stays cheap (no model/data imports)."""

from __future__ import annotations

import subprocess
import sys

from terramind_ft.cli import EXTRA_COMMANDS, LIGHTNING_COMMANDS


def test_help_lists_every_command():
    result = subprocess.run([sys.executable, "-m", "terramind_ft.cli", "--help"], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    lines = [line.split() for line in result.stdout.splitlines() if line.startswith("  ")]
    listed = {words[0] for words in lines if words}
    assert set(LIGHTNING_COMMANDS) == {"fit", "validate", "test", "predict"}
    assert {"fit", "validate", "test", "predict", *EXTRA_COMMANDS} <= listed
