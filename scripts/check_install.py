"""A fresh install as the README's "Install and test" section does it, in a new virtual environment, and what it
holds: which torch build, whether pip replaced it, CUDA packages, size, and whether the quickstart runs.

    # a CPU-only machine, as the README says (PyTorch's CPU index):
    python scripts/check_install.py --venv /tmp/tmft-cpu
    # the same with torch/torchvision from wheels or other specs (an offline machine's local wheels):
    python scripts/check_install.py --venv /tmp/tmft-cpu --torch-from /wheels/torch-*+cpu-*.whl torchvision==X

It prints one table and exits 1 when a check fails. Nothing here is a test (it downloads and takes minutes); the
packaging test (tests/test_packaging.py) checks the declared dependencies against the imports on every CI run.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
CUDA_DISTRIBUTIONS = ("nvidia-", "triton", "cuda-")

PROBE = """
import json, torch
from importlib import metadata
names = sorted(d.metadata["Name"] for d in metadata.distributions())
print(json.dumps({"torch": torch.__version__, "cuda": torch.version.cuda, "distributions": names}))
"""


def _run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    print("+", " ".join(cmd).splitlines()[0][:150], flush=True)
    return subprocess.run(cmd, text=True, capture_output=True, **kwargs)


def _size_gib(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink()) / 2**30


def _probe(python: Path) -> dict:
    result = _run([str(python), "-c", PROBE])
    if result.returncode:
        raise SystemExit(f"torch does not import in the new environment:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--venv", type=Path, required=True, help="folder of the new environment (replaced)")
    parser.add_argument("--torch-index", default=CPU_INDEX, help=f"index of torch and torchvision ({CPU_INDEX})")
    parser.add_argument("--torch-from", nargs="+", metavar="SPEC",
                        help="install torch and torchvision from these wheels/specs instead of --torch-index")
    parser.add_argument("--extras", default="", help="extras of the package, e.g. dev (default: none)")
    parser.add_argument("--cuda", action="store_true", help="a CUDA build is intended (default: CPU-only)")
    args = parser.parse_args(argv)

    if args.venv.exists():
        shutil.rmtree(args.venv)
    subprocess.run([sys.executable, "-m", "venv", str(args.venv)], check=True)
    python = args.venv / "bin" / "python"
    pip = [str(python), "-m", "pip", "install", "-q"]

    start = time.perf_counter()
    torch_step = _run(pip + (args.torch_from if args.torch_from else ["torch", "torchvision", "--index-url",
                                                                       args.torch_index]))
    if torch_step.returncode:
        raise SystemExit(f"installing torch failed:\n{torch_step.stderr[-2000:]}")
    before = _probe(python)
    package = f"{REPO}[{args.extras}]" if args.extras else str(REPO)
    package_step = _run(pip + ["-e", package])
    if package_step.returncode:
        raise SystemExit(f"installing terramind-ft failed:\n{package_step.stderr[-2000:]}")
    install_s = time.perf_counter() - start
    after = _probe(python)

    cuda_packages = [d for d in after["distributions"] if d.lower().startswith(CUDA_DISTRIBUTIONS)]
    pip_check = _run([str(python), "-m", "pip", "check"])
    start = time.perf_counter()
    quickstart = _run([str(args.venv / "bin" / "terramind-ft"), "check", "--config", "configs/quickstart.yaml"],
                      cwd=REPO)
    quickstart_s = time.perf_counter() - start
    said = [line for line in (quickstart.stdout + quickstart.stderr).splitlines()
            if line.startswith("terramind-ft:" if quickstart.returncode else "[check]")] or [""]

    rows = [
        ("torch before the package", before["torch"], True),
        ("torch after the package", after["torch"], after["torch"] == before["torch"]),
        ("torch's CUDA", str(after["cuda"]), args.cuda or after["cuda"] is None),
        ("CUDA packages", ", ".join(cuda_packages) or "none", args.cuda or not cuda_packages),
        ("environment size", f"{_size_gib(args.venv):.2f} GiB", True),
        ("install time", f"{install_s:.0f} s", True),
        ("pip check", pip_check.stdout.strip().splitlines()[0] if pip_check.stdout.strip() else "ok",
         pip_check.returncode == 0),
        (f"terramind-ft check (quickstart, {quickstart_s:.1f} s)", said[-1][:110], quickstart.returncode == 0),
    ]
    width = max(len(name) for name, _, _ in rows)
    print(f"\n| {'check':<{width}} | ok | result")
    print(f"|{'-' * (width + 2)}|----|-------")
    for name, value, ok in rows:
        print(f"| {name:<{width}} | {'ok' if ok else 'NO'} | {value}")
    failed = [name for name, _, ok in rows if not ok]
    if failed:
        print(f"\nfailed: {', '.join(failed)}")
        if quickstart.returncode:
            print(quickstart.stderr[-3000:])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
