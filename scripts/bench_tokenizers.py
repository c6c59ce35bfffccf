"""Time the TerraMind v1 tokenizers (random weights): build, encode, one UNet step, full DDIM decode, LULC decode.

    python scripts/bench_tokenizers.py --size 224 --batch 1 --steps 10 --threads 2 [--device cuda] [--bf16]

Prints one table row per measurement (median of ``--repeats`` runs after one warm-up).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from terramind_ft.models.tokenizers import build_tokenizer


def timed(fn, repeats: int, device: torch.device) -> float:
    fn()  # warm-up (allocator, kernel selection)
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modality", default="S2L2A", help="DiVAE modality to time (S2L2A, S1GRD, ...)")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--steps", type=int, default=10, help="DDIM steps of the full decode")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--bf16", action="store_true", help="run under bfloat16 autocast")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16)

    rows: list[tuple[str, str, float]] = []
    start = time.perf_counter()
    divae = build_tokenizer(args.modality).eval().to(device)
    rows.append((f"build {args.modality} DiVAE (random init)", "-", time.perf_counter() - start))
    start = time.perf_counter()
    lulc = build_tokenizer("LULC").eval().to(device)
    rows.append(("build LULC VQVAE (random init)", "-", time.perf_counter() - start))

    shape = f"{args.batch}x{args.size}x{args.size}"
    x = torch.randn(args.batch, divae.in_channels, args.size, args.size, device=device)
    classes = torch.randint(0, 10, (args.batch, args.size, args.size), device=device)
    with torch.no_grad(), autocast:
        ids = divae.encode_tokens(x)
        codes = divae.tokens_to_codes(ids)
        rows.append(("DiVAE encode", shape, timed(lambda: divae.encode_tokens(x), args.repeats, device)))
        rows.append(("DiVAE UNet, one step", shape,
                     timed(lambda: divae.decoder(x, 999, codes), args.repeats, device)))
        rows.append((f"DiVAE decode_tokens, {args.steps} steps", shape,
                     timed(lambda: divae.decode_tokens(ids, timesteps=args.steps), max(1, args.repeats // 3), device)))
        lulc_ids = lulc.encode_tokens(classes)
        rows.append(("LULC encode", shape, timed(lambda: lulc.encode_tokens(classes), args.repeats, device)))
        rows.append(("LULC decode_tokens", shape, timed(lambda: lulc.decode_tokens(lulc_ids), args.repeats, device)))

    print(f"device={device} threads={torch.get_num_threads()} bf16={args.bf16} torch={torch.__version__}")
    print(f"{'measurement':<40} {'B x H x W':>12} {'seconds':>10}")
    for name, size, seconds in rows:
        print(f"{name:<40} {size:>12} {seconds:>10.3f}")


if __name__ == "__main__":
    main()
