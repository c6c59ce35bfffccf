"""Data-loading throughput: samples/s of 512x512 S2L1C (13 x uint16) + S1GRD (2 x float32 dB) + label chips.

Generates a Sen1Floods11-like set into a temp dir (deflate-compressed, tiled GeoTIFFs like the v1.1 COGs), then
times full epochs of the train loader (D4 augmentation, standardisation, nodata replacement, collation) for
each worker count, after one warm-up batch. A "raster reads only" row gives the floor set by GDAL decoding.

    python scripts/bench_data.py                     # 0, 1, 2 workers
    python scripts/bench_data.py --workers 0 2 4 --samples 64 --crop 224
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings

import torch

from terramind_ft.data.datamodule import GenericMultiModalDataModule
from terramind_ft.data.raster import read_raster
from terramind_ft.data.synthetic import make_sen1floods11


def time_loader(dm: GenericMultiModalDataModule, epochs: int) -> tuple[float, int]:
    """Seconds and samples of ``epochs`` passes over the train loader, first batch excluded (worker start-up)."""
    loader = dm.train_dataloader()
    samples, start = 0, None
    for _ in range(epochs):
        for batch in loader:
            if start is None:
                start = time.perf_counter()  # after the first batch: workers are up
                continue
            samples += batch["mask"].shape[0]
    return time.perf_counter() - (start or time.perf_counter()), samples


def time_reads(dm: GenericMultiModalDataModule) -> tuple[float, int]:
    start = time.perf_counter()
    records = dm.records("train")
    for r in records:
        for m, path in r.files.items():
            read_raster(path, m)
        read_raster(r.label_file, "label")
    return time.perf_counter() - start, len(records)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--samples", type=int, default=32, help="train chips to generate")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--crop", type=int, default=None, help="add random_crop to this size (e.g. 224)")
    parser.add_argument("--compress", default="deflate", help="GeoTIFF compression of the generated chips ('none')")
    args = parser.parse_args()
    torch.set_num_threads(1)  # one core per loader process, as a training job would run it
    warnings.simplefilter("ignore")

    with tempfile.TemporaryDirectory(prefix="bench_data_") as tmp:
        t0 = time.perf_counter()
        data = make_sen1floods11(tmp, size=args.size, splits={"train": args.samples}, seed=0,
                                 compress=None if args.compress == "none" else args.compress)
        print(f"generated {args.samples} chips of {args.size}x{args.size} (S2L1C 13 x uint16, S1GRD 2 x float32, "
              f"label int16; compress={args.compress}) in {time.perf_counter() - t0:.1f} s")
        transform = ["d4"] + ([{"random_crop": args.crop}] if args.crop else [])
        rows = []
        base = data.datamodule_kwargs(batch_size=args.batch_size, train_transform=transform, val_data_root=None)
        dm = GenericMultiModalDataModule(**base)
        seconds, n = time_reads(dm)
        rows.append(("raster reads only", "0", n / seconds, 1000 * seconds / n))
        for workers in args.workers:
            dm = GenericMultiModalDataModule(**{**base, "num_workers": workers, "persistent_workers": workers > 0})
            dm.setup("fit")
            seconds, n = time_loader(dm, args.epochs)
            rows.append((f"train loader, {'+'.join(transform) if args.crop else 'd4'}", str(workers), n / seconds,
                         1000 * seconds / n))

    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"\nbatch_size={args.batch_size}, {args.epochs} epochs, torch threads 1 per process, {os.cpu_count()} CPU "
          f"cores, load average {load} (numbers shrink when other jobs share the cores)")
    print(f"{'what':<36}{'workers':>8}{'samples/s':>12}{'ms/sample':>12}")
    for what, workers, rate, ms in rows:
        print(f"{what:<36}{workers:>8}{rate:>12.1f}{ms:>12.1f}")


if __name__ == "__main__":
    main()
