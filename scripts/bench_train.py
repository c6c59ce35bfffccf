"""Training throughput of a config on generated 512 px Sen1Floods11-like data: samples/s and peak memory.

    python scripts/bench_train.py                       # configs/sen1floods11_tiny.yaml, fp32 and bf16-mixed
    python scripts/bench_train.py --config configs/sen1floods11.yaml --precision 32-true --steps 3

Runs the real CLI path (``build_cli``, the config's model with random weights, the data module reading GeoTIFFs)
for ``--warmup`` + ``--steps`` training steps per precision and prints a table. Peak memory is the process's
peak RSS on CPU (it only grows, so precisions run in separate processes) and ``torch.cuda.max_memory_allocated``
on a GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

DEFAULT_CONFIG = "configs/sen1floods11_tiny.yaml"


class StepTimer:
    """A Lightning callback timing each training step (data loading excluded)."""

    def __init__(self, warmup: int):
        from lightning.pytorch.callbacks import Callback

        outer = self

        class _Timer(Callback):
            def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
                if batch_idx == warmup:
                    outer.synchronize()
                    outer.start = time.perf_counter()

            def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
                outer.steps = batch_idx + 1 - warmup
                outer.synchronize()
                outer.end = time.perf_counter()

        self.callback = _Timer()
        self.start = self.end = 0.0
        self.steps = 0

    @staticmethod
    def synchronize() -> None:
        import torch

        if torch.cuda.is_available():
            torch.cuda.synchronize()


def run_one(args: argparse.Namespace) -> dict:
    """One precision, in this process."""
    import torch

    from terramind_ft.data.synthetic import make_sen1floods11
    from terramind_ft.cli.app import build_cli

    data_dir = tempfile.mkdtemp(prefix="bench_s1f11_")
    n = (args.warmup + args.steps) * args.batch_size
    ds = make_sen1floods11(data_dir, size=args.size, splits={"train": n, "val": 1, "test": 1}, compress=None)
    overrides = [
        "--model.init_args.model_args.backbone_pretrained=false",
        f"--data.init_args.batch_size={args.batch_size}", f"--data.init_args.num_workers={args.num_workers}",
        f"--data.init_args.train_data_root={json.dumps(ds.data_roots)}",
        f"--data.init_args.train_label_data_root={ds.label_root}",
        f"--data.init_args.train_split={ds.splits['train']}",
        "--data.init_args.val_data_root=null", "--data.init_args.test_data_root=null",
        f"--trainer.precision={args.precision}", "--trainer.max_epochs=1",
        f"--trainer.limit_train_batches={args.warmup + args.steps}", "--trainer.limit_val_batches=0",
        "--lr_scheduler=null", "--trainer.logger=false", "--trainer.enable_checkpointing=false",
        "--trainer.enable_progress_bar=false",
        f"--trainer.default_root_dir={tempfile.mkdtemp(prefix='bench_run_')}", "--trainer.callbacks=[]",
    ]
    cli = build_cli(["--config", args.config, *overrides], run=False)
    timer = StepTimer(args.warmup)
    cli.trainer.callbacks.append(timer.callback)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    wall = time.perf_counter() - t0
    seconds = timer.end - timer.start
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    return {
        "precision": args.precision,
        "device": (torch.cuda.get_device_name() if torch.cuda.is_available()
                   else f"cpu ({torch.get_num_threads()} threads)"),
        "samples_per_s": timer.steps * args.batch_size / seconds if seconds > 0 else float("nan"),
        "s_per_step": seconds / max(timer.steps, 1),
        "peak_rss_gib": peak_rss,
        "peak_cuda_gib": torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None,
        "trainable_params": sum(p.numel() for p in cli.model.parameters() if p.requires_grad),
        "fit_wall_s": wall,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=DEFAULT_CONFIG)
    parser.add_argument("--precision", action="append", help="repeatable; default: 32-true and bf16-mixed")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--steps", type=int, default=4, help="timed steps")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # child process mode
    args = parser.parse_args()
    if args.one:
        args.precision = args.precision[0]
        print("RESULT " + json.dumps(run_one(args)), flush=True)
        return 0
    rows = []
    for precision in args.precision or ["32-true", "bf16-mixed"]:
        cmd = [sys.executable, __file__, "--one", "--config", args.config, "--precision", precision,
               "--size", str(args.size), "--batch-size", str(args.batch_size), "--steps", str(args.steps),
               "--warmup", str(args.warmup), "--num-workers", str(args.num_workers)]
        out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
        if out.returncode or not lines:
            print(out.stdout[-3000:], out.stderr[-3000:], file=sys.stderr)
            return 1
        rows.append(json.loads(lines[-1][len("RESULT "):]))
    print(f"\n{args.config}: {args.size} px, batch {args.batch_size}, {args.steps} timed steps after {args.warmup} "
          f"warm-up, random weights ({rows[0]['trainable_params']:,} trainable parameters)")
    print(f"{'precision':<12}{'device':<22}{'samples/s':>10}{'s/step':>9}{'peak RSS GiB':>14}{'peak CUDA GiB':>15}")
    for r in rows:
        cuda = f"{r['peak_cuda_gib']:.2f}" if r["peak_cuda_gib"] is not None else "-"
        print(f"{r['precision']:<12}{r['device']:<22}{r['samples_per_s']:>10.2f}{r['s_per_step']:>9.2f}"
              f"{r['peak_rss_gib']:>14.2f}{cuda:>15}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
