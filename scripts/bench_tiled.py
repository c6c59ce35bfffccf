#!/usr/bin/env python
"""Benchmark streaming scene prediction: throughput and peak memory versus scene size.

For every size (``N`` for N x N, or ``HxW``; S2L2A 12 bands uint16 + S1GRD 2 bands float32 at 20 m, written
once into ``--workdir``), a fresh Python process builds the model, runs
:func:`terramind_ft.inference.scene.predict_scene` and reports its own peak resident memory (``VmHWM``, which,
unlike ``ru_maxrss``, does not inherit the parent's peak across fork/exec), so that sizes do not share an
allocator history. Time grows with the pixel count; memory is set by a row of chips,
i.e. by the scene *width* (flat for scenes of one width, whatever their height) plus GDAL's block cache
(``gdal_cache_mb``, 128 MB), and stays far below the scene's float32 input arrays (what whole-scene inference
would hold).

Models: ``terramind`` = terramind_v1_tiny (random weights) + SelectIndices/ReshapeTokensToImage/
LearnedInterpolateToPyramidal necks + a small UNet decoder; ``conv`` = two 3x3 convolutions (the data path
dominates: reading, warping S1, standardising, blending, writing the COG).

    python scripts/bench_tiled.py --sizes 1024 4096 8192 --model conv
    python scripts/bench_tiled.py --sizes 1024x4096 4096x4096 8192x4096 --model conv
    python scripts/bench_tiled.py --sizes 1024 2048 --model terramind --threads 2
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BANDS = {"S2L2A": 12, "S1GRD": 2}

CHILD = r"""
import json, sys, time
import torch
args = json.loads(sys.argv[1])
torch.set_num_threads(args["threads"])
from terramind_ft.inference.scene import predict_scene

if args["model"] == "terramind":
    from terramind_ft.models.factory import build_model
    model = build_model("segmentation", dict(
        backbone="terramind_v1_tiny", backbone_modalities=["S2L2A", "S1GRD"],
        necks=[{"name": "SelectIndices", "indices": [2, 5, 8, 11]}, {"name": "ReshapeTokensToImage"},
               {"name": "LearnedInterpolateToPyramidal"}],
        decoder="UNetDecoder", decoder_channels=[64, 32, 16, 8], num_classes=2)).eval()
else:
    class Conv(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Sequential(torch.nn.Conv2d(14, 16, 3, padding=1), torch.nn.ReLU(),
                                           torch.nn.Conv2d(16, 2, 3, padding=1))
        def forward(self, x):
            return self.net(torch.cat([x["S2L2A"], x["S1GRD"]], 1))
    model = Conv().eval()
def vm_hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
with torch.no_grad():  # warm-up: first-call allocations belong to the model, not to the scene
    model({"S2L2A": torch.zeros(1, 12, args["crop"], args["crop"]),
           "S1GRD": torch.zeros(1, 2, args["crop"], args["crop"])})
rss_before = vm_hwm()
t0 = time.perf_counter()
result = predict_scene(model, args["paths"], args["output"], crop=args["crop"], stride=args["stride"],
                       batch_size=args["batch_size"], write_probabilities=args["probabilities"],
                       verbose=False)
seconds = time.perf_counter() - t0
peak = vm_hwm()
print(json.dumps(dict(seconds=seconds, chips=result.chips, rss_before=rss_before, peak_rss=peak,
                      buffers=result.peak_buffer_bytes, rows=result.max_rows_in_flight)))
"""


def parse_size(text: str) -> tuple[int, int]:
    """``"4096"`` -> (4096, 4096); ``"8192x4096"`` -> (height 8192, width 4096)."""
    parts = text.lower().split("x")
    if len(parts) not in (1, 2) or not all(p.isdigit() for p in parts):
        raise argparse.ArgumentTypeError(f"size must be N or HxW, got {text!r}")
    return int(parts[0]), int(parts[-1])


def make_inputs(workdir: Path, height: int, width: int) -> dict[str, str]:
    from terramind_ft.data.synthetic import make_scene

    root = workdir / f"scene_{height}x{width}"
    paths = {m: root / m / "scene.tif" for m in BANDS}
    if not all(p.exists() for p in paths.values()):
        t0 = time.perf_counter()
        scene = make_scene(root, height=height, width=width, resolutions={"S1GRD": 20.0}, label=False,
                           nodata_box=(height // 4, width // 4, height // 16, width // 16))
        paths = scene.paths
        print(f"  generated {height}x{width} scene in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return {m: str(p) for m, p in paths.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=parse_size, nargs="+", default=[(1024, 1024), (4096, 4096), (8192, 8192)],
                        help="scene sizes: N (square) or HxW, in pixels")
    parser.add_argument("--model", choices=("terramind", "conv"), default="terramind")
    parser.add_argument("--crop", type=int, default=256)
    parser.add_argument("--stride", type=int, default=192)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--probabilities", action="store_true", help="also write float32 probabilities")
    parser.add_argument("--workdir", type=Path, default=None, help="where scenes are generated (kept for reuse)")
    args = parser.parse_args(argv)
    workdir = args.workdir or Path(tempfile.gettempdir()) / "terramind_ft_bench_tiled"
    workdir.mkdir(parents=True, exist_ok=True)

    rows = []
    for height, width in args.sizes:
        paths = make_inputs(workdir, height, width)
        child_args = dict(paths=paths, output=str(workdir / f"pred_{height}x{width}_{args.model}.tif"),
                          model=args.model,
                          crop=args.crop, stride=args.stride, batch_size=args.batch_size, threads=args.threads,
                          probabilities=args.probabilities)
        proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(child_args)], capture_output=True, text=True)
        if proc.returncode != 0:
            print(proc.stderr, file=sys.stderr)
            return proc.returncode
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        scene_float32 = height * width * sum(BANDS.values()) * 4
        rows.append((height, width, r, scene_float32))
        print(f"  {height}x{width}: {r}", file=sys.stderr)

    mb = 1024 * 1024
    print(f"\nmodel={args.model} crop={args.crop} stride={args.stride} batch={args.batch_size} "
          f"threads={args.threads} probabilities={args.probabilities}")
    header = (f"{'scene':>11} {'Mpx':>7} {'chips':>6} {'seconds':>8} {'px/s':>9} {'s/Mpx':>6} "
              f"{'RSS model MB':>12} {'peak RSS MB':>11} {'scene f32 MB':>12} {'buffers MB':>10}")
    print(header)
    print("-" * len(header))
    for height, width, r, scene_float32 in rows:
        mpx = height * width / 1e6
        print(f"{height:>5}x{width:<5} {mpx:>7.1f} {r['chips']:>6} {r['seconds']:>8.1f} "
              f"{height * width / r['seconds']:>9.0f} {r['seconds'] / mpx:>6.2f} {r['rss_before'] / mb:>12.0f} "
              f"{r['peak_rss'] / mb:>11.0f} {scene_float32 / mb:>12.0f} {r['buffers'] / mb:>10.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
