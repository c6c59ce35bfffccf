#!/usr/bin/env python
"""Benchmark the TerraMind encoder backbone: forward+backward time per step and peak memory.

Every (size, px) configuration runs in a fresh subprocess so that its peak memory is its own: on CPU the peak
resident set size (``ru_maxrss``) and its rise over the RSS right after building the model (activations,
gradients, workspace); on CUDA ``torch.cuda.max_memory_allocated``. Random weights (nothing is downloaded),
inputs S2L1C (13 bands) + S1GRD (2 bands), mean merge, loss = mean of the last layer.

    python scripts/bench_backbone.py                                   # tiny + base, 224 + 512 px, batch 4
    python scripts/bench_backbone.py --sizes tiny --px 224 --steps 5
    python scripts/bench_backbone.py --device cuda --threads 16
    python scripts/bench_backbone.py --vs-terratorch /tmp/tt/bin/python --sizes tiny --px 224

``--vs-terratorch PYTHON`` also runs TerraTorch's TerraMind (``terratorch.registry.BACKBONE_REGISTRY``, random
weights) under that interpreter (a scratch venv with ``terratorch==1.2.11``; never a dependency), same inputs, and
prints the ratio. Importing terratorch sets ``torch.set_float32_matmul_precision("medium")`` for its process, so
terramind-ft runs at the precision given by ``--float32-matmul-precision`` (default: the same "medium" when
comparing) and the table says which each row ran with.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["tiny", "base"], choices=["tiny", "small", "base", "large"])
    parser.add_argument("--px", nargs="+", type=int, default=[224, 512], help="square input sizes in pixels")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per configuration (median reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads on CPU")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--modalities", nargs="+", default=["S2L1C", "S1GRD"])
    parser.add_argument("--json", type=Path, help="also write the rows to this JSON file")
    parser.add_argument("--vs-terratorch", metavar="PYTHON", help="the python of a venv with terratorch")
    parser.add_argument("--float32-matmul-precision", default=None, choices=["highest", "high", "medium"],
                        help="for terramind-ft's runs (default: highest, or medium with --vs-terratorch)")
    parser.add_argument("--activation-checkpointing", action="store_true",
                        help="also run terramind-ft with activation_checkpointing (a row of its own)")
    parser.add_argument("--tool", default="terramind-ft", help=argparse.SUPPRESS)  # child: whose backbone
    parser.add_argument("--one", nargs=2, metavar=("SIZE", "PX"), help=argparse.SUPPRESS)  # child process mode
    return parser.parse_args(argv)


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def run_one(args: argparse.Namespace, size: str, px: int) -> dict:
    """Measure one configuration in this process (called in a child)."""
    import torch

    from terramind_ft.modalities import get_modality
    from terramind_ft.registry import BACKBONE_REGISTRY

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    if args.tool == "terratorch":
        from terratorch.registry import BACKBONE_REGISTRY as PEER_REGISTRY  # sets matmul precision "medium"

        model = PEER_REGISTRY.build(f"terramind_v1_{size}", modalities=args.modalities, pretrained=False)
        model = model.to(device).train()
    else:
        if args.float32_matmul_precision:
            torch.set_float32_matmul_precision(args.float32_matmul_precision)
        model = BACKBONE_REGISTRY.build(f"terramind_v1_{size}", modalities=args.modalities,
                                        activation_checkpointing=args.tool == "terramind-ft+ckpt").to(device).train()
    x = {m: torch.randn(args.batch, get_modality(m).num_bands, px, px, device=device) for m in args.modalities}
    cuda = device.type == "cuda"
    base_rss = rss_mib()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base_cuda = torch.cuda.memory_allocated() / 2**20
    times = []
    for step in range(args.warmup + args.steps):
        start = time.perf_counter()
        out = model(x)
        out[-1].mean().backward()
        if cuda:
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
        model.zero_grad(set_to_none=True)
        del out
        if step >= args.warmup:
            times.append(elapsed * 1000)
    row = {
        "tool": args.tool, "matmul": torch.get_float32_matmul_precision(),
        "size": size, "px": px, "batch": args.batch, "device": args.device,
        "tokens": out_tokens(px, len(args.modalities)),
        "params_M": sum(p.numel() for p in model.parameters()) / 1e6,
        "ms_per_step": statistics.median(times), "ms_min": min(times), "steps": len(times),
    }
    if cuda:
        row["peak_MiB"] = torch.cuda.max_memory_allocated() / 2**20
        row["peak_over_model_MiB"] = row["peak_MiB"] - base_cuda
        row["gpu"] = torch.cuda.get_device_name()
    else:
        row["peak_MiB"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux
        row["peak_over_model_MiB"] = row["peak_MiB"] - base_rss
        row["threads"] = args.threads
    return row


def out_tokens(px: int, n_modalities: int) -> int:
    side = -(-px // 16)
    return side * side * n_modalities


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.one:
        print("ROW " + json.dumps(run_one(args, args.one[0], int(args.one[1]))))
        return 0
    rows = []
    passthrough = ["--batch", str(args.batch), "--steps", str(args.steps), "--warmup", str(args.warmup),
                   "--threads", str(args.threads), "--device", args.device, "--modalities", *args.modalities]
    env = {**os.environ, "PYTHONPATH": f"{REPO_ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    precision = args.float32_matmul_precision or ("medium" if args.vs_terratorch else None)
    tools = [("terramind-ft", sys.executable, ["--float32-matmul-precision", precision] if precision else [])]
    if args.activation_checkpointing:
        tools.append(("terramind-ft+ckpt", sys.executable, tools[0][2]))
    if args.vs_terratorch:
        tools.append(("terratorch", args.vs_terratorch, []))
    for size in args.sizes:
        for px in args.px:
            ours = None
            for tool, python, extra in tools:
                cmd = [python, __file__, "--one", size, str(px), "--tool", tool, *passthrough, *extra]
                result = subprocess.run(cmd, capture_output=True, text=True, env=env)
                line = next((ln for ln in result.stdout.splitlines() if ln.startswith("ROW ")), None)
                if result.returncode != 0 or line is None:
                    print(f"{tool} {size} {px}px failed (exit {result.returncode}):\n{result.stderr[-2000:]}",
                          file=sys.stderr)
                    continue
                row = json.loads(line[4:])
                if tool == "terramind-ft":
                    ours = row
                elif tool == "terramind-ft+ckpt" and ours is not None:  # > 1: slower than without
                    row["ratio"] = row["ms_per_step"] / ours["ms_per_step"]
                elif ours is not None:  # speed ratio: above 1 means terramind-ft is faster
                    row["ratio"] = row["ms_per_step"] / ours["ms_per_step"]
                rows.append(row)
                print_table(rows[-1:], header=len(rows) == 1)
    if args.json:
        tmp = args.json.with_suffix(args.json.suffix + ".tmp")
        tmp.write_text(json.dumps(rows, indent=1))
        tmp.replace(args.json)
    return 0 if rows else 1


def print_table(rows: list[dict], header: bool = True) -> None:
    columns = [("tool", "{}"), ("matmul", "{}"), ("size", "{}"), ("px", "{}"), ("batch", "{}"), ("tokens", "{}"), ("params_M", "{:.1f}"),
               ("ms_per_step", "{:.0f}"), ("ms_min", "{:.0f}"), ("peak_MiB", "{:.0f}"),
               ("peak_over_model_MiB", "{:.0f}"), ("device", "{}"), ("ratio", "{:.2f}x")]
    widths = [max(len(name), 8) for name, _ in columns]
    if header:
        print("  ".join(name.rjust(w) for (name, _), w in zip(columns, widths)))
    for row in rows:
        print("  ".join((fmt.format(row[name]) if name in row else "").rjust(w)
                        for (name, fmt), w in zip(columns, widths)), flush=True)


if __name__ == "__main__":
    sys.exit(main())
