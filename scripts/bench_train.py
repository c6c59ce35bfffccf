"""Training speed of a config on generated Sen1Floods11-like data, optionally side by side with TerraTorch.

    python scripts/bench_train.py                                    # the official tiny config, 16-mixed and 32-true
    python scripts/bench_train.py --vs-terratorch /tmp/tt/bin/terratorch   # the same runs through TerraTorch too
    python scripts/bench_train.py --config configs/terratorch/terramind_v1_base_sen1floods11.yaml --steps 3

Every run is the real command line, ``terramind-ft fit`` or ``terratorch fit``, in its own process, on the same
generated data (``--size`` px, S2L1C + S1GRD) with the same overrides: random backbone weights (nothing can be
downloaded), ``--warmup`` + ``--steps`` training batches, one validation batch and the tool's default sanity check.
A callback (``scripts/bench_timer.py``) measures inside each process: seconds per training step (forward,
backward, optimiser; data loading excluded), samples/s over the timed steps (data loading included), launch to
first training step (imports, config, model, sanity check), the process's peak RSS, and the float32 matmul
precision the process ran with (importing terratorch sets "medium" for the whole process; give
``--float32-matmul-precision medium`` to run terramind-ft at the same setting). The table prints ratios
terramind-ft / TerraTorch: above 1 for speed means we are faster.

TerraTorch is never a dependency: install it in a scratch venv, e.g.
``python -m venv --system-site-packages /tmp/tt && /tmp/tt/bin/pip install terratorch==1.2.11 torchgeo==0.8.1``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_CONFIG = HERE.parent / "configs" / "terratorch" / "terramind_v1_tiny_sen1floods11.yaml"


def run_tool(tool: list[str], config: Path, data, args: argparse.Namespace, precision: str, work: Path,
             extra: list[str]) -> dict:
    out = work / f"timer_{time.time_ns()}.json"
    overrides = [
        f"--data.init_args.batch_size={args.batch_size}", f"--data.init_args.num_workers={args.num_workers}",
        f"--data.init_args.train_data_root={json.dumps(data.data_roots)}",
        f"--data.init_args.train_label_data_root={data.label_root}",
        f"--data.init_args.train_split={data.splits['train']}",
        f"--data.init_args.val_data_root={json.dumps(data.data_roots)}",
        f"--data.init_args.val_label_data_root={data.label_root}",
        f"--data.init_args.val_split={data.splits['val']}",
        f"--trainer.precision={precision}", "--trainer.max_epochs=1",
        f"--trainer.limit_train_batches={args.warmup + args.steps}", "--trainer.limit_val_batches=1",
        "--trainer.enable_checkpointing=false", "--trainer.enable_progress_bar=false",
        f"--trainer.default_root_dir={tempfile.mkdtemp(dir=work, prefix='run_')}",
        "--trainer.callbacks+=bench_timer.StepTimer",
    ]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
           "BENCH_WARMUP": str(args.warmup), "BENCH_OUT": str(out), "HF_HUB_OFFLINE": "1"}
    env["BENCH_T0"] = str(time.time())
    result = subprocess.run([*tool, "fit", "--config", str(config), *overrides, *extra], env=env,
                            capture_output=True, text=True, cwd=work)
    if result.returncode != 0 or not out.exists():
        sys.exit(f"{' '.join(tool)} failed ({result.returncode}):\n{result.stderr[-4000:]}")
    return json.loads(out.read_text())


# torchmetrics, which Lightning imports at start-up, imports each of these it finds installed (~0.5-1 s each here).
# The default install has none but torchvision; the [dev] and [peft] extras bring transformers and scipy.
STARTUP_OPTIONAL_IMPORTS = ("transformers", "scipy", "torchvision")


def startup_note() -> str:
    """Which environment terramind-ft ran in, and what in it lengthens the launch, for reading that column."""
    from importlib.util import find_spec

    found = [name for name in STARTUP_OPTIONAL_IMPORTS if find_spec(name) is not None]
    return (f"terramind-ft ran in {sys.prefix}; packages torchmetrics imports at start-up found there: "
            f"{', '.join(found) or 'none'}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="a config both tools read (TerraTorch's "
                   "class paths; terramind-ft maps them)")
    p.add_argument("--precision", action="append", help="repeatable; default 16-mixed (the config's) and 32-true")
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--num-workers", type=int, default=2)
    p.add_argument("--steps", type=int, default=6, help="timed steps")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=1, help="alternate the tools this many times; the best run counts")
    p.add_argument("--vs-terratorch", metavar="PATH/bin/terratorch", help="also run TerraTorch's CLI")
    p.add_argument("--activation-checkpointing", action="store_true",
                   help="also run terramind-ft with backbone_activation_checkpointing: true (a row of its own)")
    p.add_argument("--float32-matmul-precision", default=None,
                   help="terramind-ft's float32_matmul_precision for its runs (TerraTorch runs 'medium')")
    args = p.parse_args()

    from terramind_ft.data.synthetic import make_sen1floods11

    import yaml

    work = Path(tempfile.mkdtemp(prefix="bench_train_"))
    # Random backbone weights (nothing can be downloaded), set in the file: a dotted override of a model_args
    # entry reaches TerraTorch as the string "false", which is true.
    raw = yaml.safe_load(args.config.read_text())
    raw["model"]["init_args"]["model_args"]["backbone_pretrained"] = False
    config = work / args.config.name
    config.write_text(yaml.safe_dump(raw, sort_keys=False))
    n = (args.warmup + args.steps) * args.batch_size
    data = make_sen1floods11(work / "data", size=args.size, splits={"train": n, "val": args.batch_size, "test": 1},
                             compress=None)
    ours = [sys.executable, "-m", "terramind_ft.cli"]
    extra_ours = ([f"--float32_matmul_precision={args.float32_matmul_precision}"]
                  if args.float32_matmul_precision else [])
    tools = [("terramind-ft", ours, extra_ours)]
    if args.activation_checkpointing:
        tools.append(("terramind-ft, activation checkpointing", ours,
                      [*extra_ours, "--model.init_args.model_args.backbone_activation_checkpointing=true"]))
    if args.vs_terratorch:
        tools.append(("TerraTorch", [args.vs_terratorch], []))
    rows = []
    for precision in args.precision or ["16-mixed", "32-true"]:
        best: dict[str, dict] = {}
        for _ in range(args.repeats):
            for name, tool, extra in tools:
                r = run_tool(tool, config, data, args, precision, work, extra)
                if name not in best or r["s_per_step"] < best[name]["s_per_step"]:
                    best[name] = r
        rows.append((precision, best))
    print(f"\n{args.config.name}: {args.size} px, batch {args.batch_size}, {args.num_workers} workers, "
          f"{args.steps} timed steps after {args.warmup}, random weights, {os.cpu_count()} CPUs")
    print(startup_note())
    print("| precision | tool | matmul fp32 | s/step | samples/s | launch to 1st step | peak RSS | speed ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for precision, best in rows:
        peer = best.get("TerraTorch")
        for name, r in best.items():
            ratio = f"{peer['s_per_step'] / r['s_per_step']:.2f}x" if peer and name != "TerraTorch" else ""
            print(f"| {precision} | {name} | {r['float32_matmul_precision']} | {r['s_per_step']:.2f} | "
                  f"{r['samples_per_s']:.2f} | {r['launch_to_first_step_s']:.1f} s | {r['peak_rss_gib']:.2f} GiB | "
                  f"{ratio} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
