"""Every code block of the README runs as written, offline, from a fresh clone.

Python blocks run in one namespace in file order, bash blocks line by line in a copy of the repository's
``configs/``, ``examples/`` and ``scripts/``, YAML blocks must parse. A block preceded by
``<!-- readme-test: skip (why) -->`` is reported as skipped with its reason (a cluster, a benchmark); plain
``` blocks are pictures of folders, not code.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"(?:<!-- readme-test: skip \((?P<why>[^)]*)\) -->\n)?```(?P<lang>\w*)\n(?P<body>.*?)```", re.S)

pytestmark = pytest.mark.slow


def _blocks() -> list[tuple[int, str, str, str | None]]:
    text = (REPO / "README.md").read_text()
    out = []
    for m in FENCE.finditer(text):
        line = text[: m.start()].count("\n") + 1
        out.append((line, m.group("lang"), m.group("body"), m.group("why")))
    return out


BLOCKS = _blocks()


@pytest.fixture(scope="module")
def clone(tmp_path_factory):
    work = tmp_path_factory.mktemp("readme")
    for folder in ("configs", "examples", "scripts"):
        shutil.copytree(REPO / folder, work / folder)
    return work


def _commands(body: str) -> list[str]:
    joined = body.replace("\\\n", " ")
    return [line for line in (raw.strip() for raw in joined.splitlines()) if line and not line.startswith("#")]


def test_the_readme_has_code_to_run():
    langs = [lang for _, lang, _, why in BLOCKS if why is None]
    assert langs.count("python") >= 4 and langs.count("bash") >= 4


@pytest.mark.parametrize("line,lang,body,why", BLOCKS, ids=[f"line{b[0]}-{b[1] or 'text'}" for b in BLOCKS])
def test_block_runs_as_written(line, lang, body, why, clone, monkeypatch):
    if why is not None:
        pytest.skip(f"README line {line}: {why}")
    if lang == "yaml":
        assert isinstance(yaml.safe_load(body), dict)
    elif lang == "python":
        monkeypatch.chdir(clone)
        exec(compile(body, f"README.md:{line}", "exec"), {"__name__": "readme"})
    elif lang == "bash":
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
        for command in _commands(body):
            args = shlex.split(command, comments=True)
            if args[0] == "python":
                args[0] = sys.executable
            result = subprocess.run(args, cwd=clone, env=env, capture_output=True, text=True, timeout=900)
            assert result.returncode == 0, f"README line {line}: {command}\n{result.stderr[-3000:]}"
    else:
        assert lang == "", f"README line {line}: unknown block language {lang!r}"
