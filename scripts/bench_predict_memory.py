"""Peak memory of ``terramind-ft predict`` with tiling given only on the command line, by scene size.

Fits the tiny model for one step on generated 64 px data (random backbone, a real checkpoint), then runs
``predict --ckpt_path best --model.init_args.tiled_inference_parameters '{crop: 224, stride: 192}'`` as a user
does, each in its own process, on two-modality scenes (S2L1C + S1GRD) of the given sizes, and prints the peak RSS
of each predict process (``ru_maxrss`` of the child) and its time. Streaming means the peak stays flat.

    python scripts/bench_predict_memory.py --sizes 1024 4096
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

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from cli_configs import sen1floods11_config  # noqa: E402

from terramind_ft.data.synthetic import make_scene  # noqa: E402


def _run(args: list[str], cwd: Path) -> tuple[float, float]:
    """(seconds, peak RSS in GiB) of one terramind-ft process."""
    start = time.perf_counter()
    code = f"import resource, sys; from terramind_ft.cli import main; c = main({args!r}); " \
           "print('MAXRSS', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr); sys.exit(c)"
    result = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(result.stderr[-3000:])
    rss_kb = int(result.stderr.rsplit("MAXRSS", 1)[1].split()[0])
    return time.perf_counter() - start, rss_kb / 2**20


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[1024, 4096])
    p.add_argument("--crop", type=int, default=224)
    p.add_argument("--stride", type=int, default=192)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        config = sen1floods11_config(tmp)
        config["trainer"]["max_steps"] = 1
        config["model"]["init_args"]["plot_on_val"] = 0
        cfg = tmp / "fit.yaml"
        cfg.write_text(yaml.safe_dump(config, sort_keys=False))
        _run(["fit", "--config", str(cfg)], tmp)
        rows = []
        for size in args.sizes:
            scene = make_scene(tmp / f"scene{size}", height=size, width=size, modalities=("S2L1C", "S1GRD"),
                               label=False, name=f"s{size}")
            roots = {}
            for modality, suffix in (("S2L1C", "_S2Hand.tif"), ("S1GRD", "_S1Hand.tif")):
                path = Path(scene.paths[modality])
                path.rename(path.with_name(path.stem + suffix))
                roots[modality] = str(path.parent)
            seconds, rss = _run(["predict", "--config", str(cfg), "--ckpt_path", "last",
                                 "--data.init_args.predict_data_root", json.dumps(roots),
                                 "--predict_output_dir", str(tmp / f"out{size}"),
                                 "--model.init_args.tiled_inference_parameters",
                                 f"{{crop: {args.crop}, stride: {args.stride}}}"], tmp)
            rows.append((size, seconds, rss))
    print(f"\npredict, tiling on the command line only (crop {args.crop}, stride {args.stride}), tiny TerraMind, "
          f"{os.cpu_count()} CPUs")
    print("| scene | time | peak RSS | vs first |")
    print("|---|---|---|---|")
    for size, seconds, rss in rows:
        print(f"| {size}x{size} | {seconds:.1f} s | {rss:.2f} GiB | {rss / rows[0][2]:.2f}x |")


if __name__ == "__main__":
    main()
