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

``--vs-terratorch PYTHON`` instead compares the *eval forward* (no_grad, batch ``--batch``, float32) of TiM and of
the plain backbone, side by side with TerraTorch's under that interpreter (a scratch venv with terratorch==1.2.11,
never a dependency), best of ``--steps`` calls each, in fresh processes; both at float32 matmul precision "medium"
(importing terratorch sets it for its process). It also prints the floor set by the work TiM adds: token-blocks of
the linear layers (generator encoder over the N input tokens, its decoder over the M generated ones with their
cross-attention projections, the TiM encoder over N + M) over those of the plain encoder (N tokens).

    python scripts/bench_tim.py --vs-terratorch /tmp/ttvenv/bin/python --sizes tiny --img 224 --steps 5
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


PEER_EVAL = """
import json, sys, time, torch
from terratorch.registry import BACKBONE_REGISTRY
size, img, batch, steps, variant = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
torch.manual_seed(0)
name = f"terramind_v1_{size}" + ("_tim" if variant == "tim" else "")
kwargs = dict(modalities=["S2L2A", "S1GRD"], pretrained=False)
if variant == "tim":
    kwargs["tim_modalities"] = ["LULC"]
model = BACKBONE_REGISTRY.build(name, **kwargs).eval()
# TerraTorch 1.2.11 sends the generated LULC ids through its LULC tokenizer, which refuses them ("Expect input data
# with 10 classes"); without that tokenizer entry the ids go straight into the token embedding (as the
# reference fixtures were made, see case d of $TERRAMIND_REF_DIR/cases.json)
tokenizers = getattr(model, "tokenizer", None)
if tokenizers is not None and "tok_lulc@224" in tokenizers:
    del tokenizers["tok_lulc@224"]
g = torch.Generator().manual_seed(1)
x = {"S2L2A": torch.randn(batch, 12, img, img, generator=g), "S1GRD": torch.randn(batch, 2, img, img, generator=g)}
times = []
with torch.no_grad():
    for i in range(steps + 1):
        # a fresh dict per call: TerraTorch 1.2.11 writes the generated tokens into the caller's dict, and a
        # second call with that dict skips generation (it finds the TiM modality among the inputs)
        t0 = time.perf_counter(); model(dict(x)); times.append(time.perf_counter() - t0)
print(json.dumps({"eval_s": min(times[1:]), "matmul": torch.get_float32_matmul_precision()}))
"""


def _ours_eval(size: str, img: int, variant: str, batch: int, steps: int) -> dict:
    import torch

    from terramind_ft.registry import BACKBONE_REGISTRY

    torch.set_float32_matmul_precision("medium")  # what importing terratorch sets for the peer's process
    torch.manual_seed(0)
    name = f"terramind_v1_{size}" + ("_tim" if variant.startswith("tim") else "")
    kwargs = dict(modalities=["S2L2A", "S1GRD"], pretrained=False)
    if variant.startswith("tim"):
        kwargs["tim_modalities"] = ["LULC"]
    if variant == "tim_cached":  # the warm-up call fills the cache; the timed calls generate nothing
        kwargs["tim_cache"] = "memory"
    model = BACKBONE_REGISTRY.build(name, **kwargs).eval()
    g = torch.Generator().manual_seed(1)
    x = {"S2L2A": torch.randn(batch, 12, img, img, generator=g), "S1GRD": torch.randn(batch, 2, img, img, generator=g)}
    times = []
    with torch.no_grad():
        for _ in range(steps + 1):
            t0 = time.perf_counter()
            model(dict(x))  # as the peer's (which needs it); ours never modifies the input dict
            times.append(time.perf_counter() - t0)
    return {"eval_s": min(times[1:]), "matmul": torch.get_float32_matmul_precision()}


def tim_work_floor(size: str, img: int, inputs: int = 2, tim: int = 1) -> float:
    """Linear-layer token-blocks of a TiM forward over those of the plain encoder (see the module docstring)."""
    from terramind_ft.models.terramind.sizes import get_size

    s = get_size(size)
    n = inputs * (img // 16) ** 2
    m = tim * (img // 16) ** 2
    # Multiply-adds in units of D^2 per token and block: attention qkv + proj 4, MLP 8 (two D x 4D matrices, or
    # SwiGLU's three D x 8D/3); a decoder query adds cross-attention q + proj (2), and every context token costs
    # its cross-attention k, v (2) per decoder block. Attention scores (N^2 D) are left out: small at these N.
    mlp = 8
    enc_token = 4 + mlp
    dec_query = 4 + 2 + mlp
    plain = n * s.encoder_depth * enc_token
    tim_cost = (n * s.encoder_depth * enc_token + s.decoder_depth * (m * dec_query + n * 2)
                + (n + m) * s.encoder_depth * enc_token)
    return tim_cost / plain


def compare_with_terratorch(args: argparse.Namespace) -> int:
    print(f"eval forward (no_grad), batch {args.batch}, inputs S2L2A + S1GRD, TiM LULC, float32 at matmul precision "
          f"'medium' for both, best of {args.steps}, one process per row, device cpu")
    header = (f"{'size':<5} {'px':>4} {'tool':<13} {'plain s':>8} {'TiM s':>8} {'TiM x plain':>12} {'work floor':>11} "
              f"{'cached x plain':>15}")
    print(header)
    print("-" * len(header))
    for size in args.sizes:
        for img in args.img:
            floor = tim_work_floor(size, img)
            for tool in ("terramind-ft", "TerraTorch"):
                seconds = {}
                for variant in ("plain", "tim") + (("tim_cached",) if tool == "terramind-ft" else ()):
                    if tool == "TerraTorch":
                        cmd = [args.vs_terratorch, "-c", PEER_EVAL, size, str(img), str(args.batch), str(args.steps),
                               variant]
                    else:
                        cmd = [sys.executable, __file__, "--eval-worker", size, str(img), variant, "--batch",
                               str(args.batch), "--steps", str(args.steps)]
                    done = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
                    if done.returncode != 0:
                        print(f"{size:<5} {img:>4} {tool:<13} {variant} failed: {done.stderr.strip()[-300:]}")
                        break
                    seconds[variant] = json.loads(done.stdout.strip().splitlines()[-1])["eval_s"]
                if "tim" in seconds:
                    cached = (f"{seconds['tim_cached'] / seconds['plain']:15.2f}" if "tim_cached" in seconds
                              else f"{'-':>15}")
                    print(f"{size:<5} {img:>4} {tool:<13} {seconds['plain']:8.3f} {seconds['tim']:8.3f} "
                          f"{seconds['tim'] / seconds['plain']:12.2f} {floor:11.2f} {cached}", flush=True)
    return 0


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
    p.add_argument("--eval-worker", nargs=3, metavar=("SIZE", "IMG", "VARIANT"), help=argparse.SUPPRESS)
    p.add_argument("--vs-terratorch", metavar="PYTHON",
                   help="compare the eval forward with TerraTorch's under this interpreter (see the docstring)")
    args = p.parse_args(argv)
    if args.eval_worker:
        size, img, variant = args.eval_worker
        print(json.dumps(_ours_eval(size, int(img), variant, args.batch, args.steps)))
        return 0
    if args.vs_terratorch:
        return compare_with_terratorch(args)
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
