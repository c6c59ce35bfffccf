"""Benchmark TiM against the plain TerraMind backbone: training step (forward + backward) and peak memory.

    python scripts/bench_tim.py                                # tiny + base, 224 + 512 px, every variant
    python scripts/bench_tim.py --sizes tiny --img 224 512 --steps 3 --device cpu

Each configuration runs in its own process (so peak memory is that configuration's alone) with random
weights, inputs S2L2A + S1GRD (batch ``--batch``) and a tiny trainable head (token mean -> Linear -> MSE).
Variants:

* ``plain``        terramind_v1_<size>, everything trainable;
* ``tim``          terramind_v1_<size>_tim (LULC), sampling as in training (temperature 1, top-p 0.8);
* ``tim_cached``   the same with ``tim_cache="memory"`` after one warm-up step (no generation any more);
* ``plain_frozen`` / ``tim_frozen``: encoder frozen, head trained; TiM then shares the frozen encoder with its
  generator (one copy of the weights instead of two); ``tim_frozen_noshare`` is the same without sharing.

Columns: parameters held (unique tensors), step time (best of ``--steps`` after one warm-up: on a shared machine
the minimum is the least disturbed estimate), eval forward time (TiM: greedy), peak memory (CPU: peak RSS of the
process; CUDA: ``max_memory_allocated``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

VARIANTS = ("plain", "tim", "tim_cached", "plain_frozen", "tim_frozen", "tim_frozen_noshare")


def _worker(size: str, img: int, variant: str, batch: int, steps: int, device: str) -> dict:
    import torch

    from terramind_ft.registry import BACKBONE_REGISTRY

    torch.manual_seed(0)
    dev = torch.device(device)
    kwargs = dict(modalities=["S2L2A", "S1GRD"], pretrained=False)
    if variant.startswith("tim"):
        kwargs.update(tim_modalities=["LULC"], tim_seed=0)
        if variant == "tim_cached":
            kwargs["tim_cache"] = "memory"
        if variant == "tim_frozen_noshare":
            kwargs["share_frozen_weights"] = False
        backbone = BACKBONE_REGISTRY.build(f"terramind_v1_{size}_tim", **kwargs)
    else:
        backbone = BACKBONE_REGISTRY.build(f"terramind_v1_{size}", **kwargs)
    if "frozen" in variant:
        for name, p in backbone.named_parameters():
            p.requires_grad_(False)
    head = torch.nn.Linear(backbone.out_channels[-1], 2)
    backbone.to(dev), head.to(dev)
    params = [p for p in [*backbone.parameters(), *head.parameters()] if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-5)
    g = torch.Generator().manual_seed(1)
    x = {"S2L2A": torch.randn(batch, 12, img, img, generator=g).to(dev),
         "S1GRD": torch.randn(batch, 2, img, img, generator=g).to(dev)}
    target = torch.zeros(batch, 2, device=dev)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    def train_step():
        backbone.train(), head.train()
        optimizer.zero_grad(set_to_none=True)
        feats = backbone(x)[-1]
        loss = torch.nn.functional.mse_loss(head(feats.mean(1)), target)
        loss.backward()
        optimizer.step()

    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for i in range(steps + 1):
        sync()
        t0 = time.perf_counter()
        train_step()
        sync()
        if i:  # the first step warms up (and fills the TiM cache)
            times.append(time.perf_counter() - t0)
    backbone.eval()
    with torch.no_grad():
        backbone(x)
        sync()
        t0 = time.perf_counter()
        backbone(x)
        sync()
        eval_s = time.perf_counter() - t0
    unique = {id(p): p.numel() for p in backbone.parameters()}
    shared = backbone.shared_parameter_count() if hasattr(backbone, "shared_parameter_count") else 0
    if dev.type == "cuda":
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kB
    return {"size": size, "img": img, "variant": variant, "params_m": sum(unique.values()) / 1e6,
            "shared_m": shared / 1e6, "step_s": min(times), "eval_s": eval_s, "peak_mb": peak_mb}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", nargs="+", default=["tiny", "base"])
    p.add_argument("--img", nargs="+", type=int, default=[224, 512])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--device", default="cuda" if os.environ.get("CUDA_VISIBLE_DEVICES", "") != "" else "cpu")
    p.add_argument("--timeout", type=int, default=1800, help="seconds per configuration")
    p.add_argument("--worker", nargs=3, metavar=("SIZE", "IMG", "VARIANT"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        size, img, variant = args.worker
        print(json.dumps(_worker(size, int(img), variant, args.batch, args.steps, args.device)))
        return 0

    header = (f"{'size':<5} {'px':>4} {'variant':<18} {'params M':>9} {'shared M':>9} {'step s':>8} "
              f"{'x plain':>8} {'eval s':>8} {'peak MB':>9}")
    print(f"device {args.device}, batch {args.batch}, inputs S2L2A + S1GRD, best of {args.steps} steps")
    print(header)
    print("-" * len(header))
    for size in args.sizes:
        for img in args.img:
            base_step = None
            for variant in args.variants:
                cmd = [sys.executable, __file__, "--worker", size, str(img), variant, "--batch", str(args.batch),
                       "--steps", str(args.steps), "--device", args.device]
                try:
                    done = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
                except subprocess.TimeoutExpired:
                    print(f"{size:<5} {img:>4} {variant:<18} timed out after {args.timeout} s", flush=True)
                    continue
                if done.returncode != 0:
                    print(f"{size:<5} {img:>4} {variant:<18} failed: {done.stderr.strip().splitlines()[-1:]}",
                          flush=True)
                    continue
                r = json.loads(done.stdout.strip().splitlines()[-1])
                if variant == "plain":
                    base_step = r["step_s"]
                ratio = f"{r['step_s'] / base_step:8.2f}" if base_step else f"{'-':>8}"
                print(f"{size:<5} {img:>4} {variant:<18} {r['params_m']:9.1f} {r['shared_m']:9.1f} "
                      f"{r['step_s']:8.2f} {ratio} {r['eval_s']:8.2f} {r['peak_mb']:9.0f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
