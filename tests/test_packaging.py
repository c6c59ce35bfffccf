"""pyproject.toml declares what the code imports, and nothing it does not.

An undeclared import works here only because another package happens to bring it; a declared package that nothing
imports makes every install bigger (torchgeo alone pulls geopandas, kornia, timm, lightly and hydra). The imports
are read from the sources (``import x``, ``from x import y``, ``importlib.import_module("x")``), so an import
inside a function counts as well.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from functools import cache
from importlib import metadata
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Distributions no source file imports by name, each with the reason it is declared.
IMPORTED_BY_OTHERS = {
    "tensorboard": "Lightning's TensorBoardLogger, named by a config",
    "rich": "Lightning's RichProgressBar, named by a config",
    "mlflow": "Lightning's MLFlowLogger, named by a config",
    "pytest": "runs the tests",
    "pytest-timeout": "the per-test time limit of [tool.pytest.ini_options]",
}


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_name(requirement: str) -> str:
    return _normalise(re.match(r"[A-Za-z0-9._-]+", requirement).group(0))


def _project() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


@cache
def _third_party_imports(folder: Path) -> dict[str, set[str]]:
    """Top-level module -> the files under ``folder`` that import it (standard library and our package left out)."""
    found: dict[str, set[str]] = {}
    for path in sorted(folder.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            elif (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None))
                  == "import_module" and node.args and isinstance(node.args[0], ast.Constant)
                  and isinstance(node.args[0].value, str)):
                names = [node.args[0].value]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top != "terramind_ft":
                    found.setdefault(top, set()).add(str(path.relative_to(REPO)))
    return found


def _distributions_of(modules: dict[str, set[str]]) -> dict[str, set[str]]:
    """Distribution -> the files importing one of its modules; a module no installed distribution provides maps
    to itself, so that the assertion below names it."""
    providers = metadata.packages_distributions()
    out: dict[str, set[str]] = {}
    for module, files in modules.items():
        for dist in providers.get(module, [module]):
            out.setdefault(_normalise(dist), set()).update(files)
    return out


def test_every_package_the_code_imports_is_declared():
    project = _project()
    declared = {_requirement_name(r) for r in project["dependencies"]}
    for requirements in project["optional-dependencies"].values():
        declared |= {_requirement_name(r) for r in requirements}
    used = _distributions_of(_third_party_imports(REPO / "terramind_ft"))
    undeclared = {dist: sorted(files) for dist, files in used.items() if dist not in declared}
    assert not undeclared, f"imported by terramind_ft but not declared in pyproject.toml: {undeclared}"


def test_every_core_dependency_is_imported_by_the_package():
    used = _distributions_of(_third_party_imports(REPO / "terramind_ft"))
    unused = sorted(_requirement_name(r) for r in _project()["dependencies"] if _requirement_name(r) not in used)
    assert not unused, f"core dependencies nothing in terramind_ft imports: {unused} (make them an extra or drop them)"


@pytest.mark.parametrize("extra", sorted(_project()["optional-dependencies"]))
def test_every_optional_dependency_is_imported_or_has_a_reason(extra):
    used = _distributions_of(_third_party_imports(REPO / "terramind_ft"))
    if extra == "dev":  # the dev extra also serves the tests and the scripts
        for folder in ("tests", "scripts"):
            for dist, files in _distributions_of(_third_party_imports(REPO / folder)).items():
                used.setdefault(dist, set()).update(files)
    names = [_requirement_name(r) for r in _project()["optional-dependencies"][extra]]
    unused = [n for n in names if n not in used and n not in IMPORTED_BY_OTHERS]
    assert not unused, f"[{extra}] declares {unused}, which nothing imports"


def test_core_dependencies_leave_out_the_heavy_optional_packages():
    """torchgeo, peft and the GeoParquet writer are extras: the default install must not pull them."""
    core = {_requirement_name(r) for r in _project()["dependencies"]}
    assert not core & {"torchgeo", "peft", "pyarrow", "pyproj", "tokenizers", "torchvision", "einops"}
