"""``terramind-ft compute-statistics --config X.yaml``: per-band mean/std and class frequencies of a split.

Only the data part of a LightningCLI config is built (``data.init_args`` -> ``GenericMultiModalDataModule``),
so the model, its weights and its dependencies are never touched. The split is streamed once, without
augmentation, in raw file units, with nodata/NaN values excluded; per-band statistics are merged per sample
with Chan's parallel algorithm in float64 (stable for 16-bit reflectances over thousands of chips). The
result is printed as a YAML snippet ready to paste under ``data.init_args``.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from terramind_ft.data.datamodule import GenericMultiModalDataModule
from terramind_ft.data.files import DataNotice
from terramind_ft.errors import ConfigError, TerraMindFTError
from terramind_ft.io import atomic_write_text, read_yaml_mapping
from terramind_ft.registry import check_kwargs

DATA_KEY = "data"
# class_path values accepted for the data section (TerraTorch configs name theirs; the arguments are shared).
ACCEPTED_CLASS_NAMES = ("GenericMultiModalDataModule",)


class _RunningMoments:
    """Count, mean and sum of squared deviations per channel, merged batch by batch (Chan et al.)."""

    def __init__(self, channels: int):
        self.n = np.zeros(channels, np.float64)
        self.mean = np.zeros(channels, np.float64)
        self.m2 = np.zeros(channels, np.float64)

    def update(self, values: np.ndarray) -> None:
        """``values``: ``[C, N]`` with NaN where invalid."""
        valid = np.isfinite(values)
        n_b = valid.sum(axis=1).astype(np.float64)
        x = np.where(valid, values, 0.0).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean_b = np.where(n_b > 0, x.sum(axis=1) / np.maximum(n_b, 1), 0.0)
        m2_b = (np.where(valid, x - mean_b[:, None], 0.0) ** 2).sum(axis=1)
        n = self.n + n_b
        delta = mean_b - self.mean
        safe_n = np.maximum(n, 1)
        self.mean = self.mean + delta * n_b / safe_n
        self.m2 = self.m2 + m2_b + delta**2 * self.n * n_b / safe_n
        self.n = n

    @property
    def std(self) -> np.ndarray:
        return np.sqrt(self.m2 / np.maximum(self.n, 1))


@dataclass
class Statistics:
    """Per-modality per-band mean/std (raw units, valid pixels only) and label statistics of one split."""

    split: str
    samples: int
    means: dict[str, list[float]]
    stds: dict[str, list[float]]
    valid_values: dict[str, int]  # band-pixels used, per modality
    nodata_values: dict[str, int]  # band-pixels excluded, per modality
    bands: dict[str, list[str] | None] = field(default_factory=dict)
    class_counts: dict[str, int] = field(default_factory=dict)  # class name -> pixels (or samples)
    ignored_labels: int = 0
    label_unit: str = "pixels"
    target_mean: float | None = None  # regression
    target_std: float | None = None

    @property
    def class_frequencies(self) -> dict[str, float]:
        total = sum(self.class_counts.values())
        return {k: (v / total if total else 0.0) for k, v in self.class_counts.items()}

    def to_yaml(self, source: str = "") -> str:
        """A snippet to paste under ``data.init_args`` (comments carry the context)."""

        def row(values: list[float]) -> str:
            return "[" + ", ".join(f"{v:.4f}".rstrip("0").rstrip(".") if abs(v) < 1e6 else f"{v:.6g}"
                                   for v in values) + "]"

        lines = ["# terramind-ft compute-statistics" + (f": {source}" if source else ""),
                 f"# split: {self.split}, {self.samples} samples; raw file units, nodata/NaN values excluded"]
        for m in self.means:
            total = self.valid_values[m] + self.nodata_values[m]
            share = 100.0 * self.nodata_values[m] / total if total else 0.0
            bands = f" bands {', '.join(self.bands[m])};" if self.bands.get(m) else ""
            lines.append(f"#   {m}:{bands} {self.valid_values[m]} valid values, {share:.2f}% nodata excluded")
        lines.append("means:")
        lines += [f"  {m}: {row(v)}" for m, v in self.means.items()]
        lines.append("stds:")
        lines += [f"  {m}: {row(v)}" for m, v in self.stds.items()]
        if self.class_counts:
            total = sum(self.class_counts.values()) + self.ignored_labels
            ignored = 100.0 * self.ignored_labels / total if total else 0.0
            lines.append(f"# label class frequencies ({self.label_unit}; {ignored:.2f}% ignored labels excluded). "
                         "Not a data.init_args key: use them e.g. for class weights.")
            lines.append("# class_frequencies:")
            lines += [f"#   {name}: {freq:.4f}  # {self.class_counts[name]} {self.label_unit}"
                      for name, freq in self.class_frequencies.items()]
        if self.target_mean is not None:
            lines.append(f"# regression target: mean {self.target_mean:.6g}, std {self.target_std:.6g}")
        return "\n".join(lines) + "\n"


def compute_statistics(
    datamodule: GenericMultiModalDataModule,
    split: str = "train",
    *,
    max_samples: int | None = None,
    num_workers: int | None = None,
    progress: bool = True,
) -> Statistics:
    """Stream ``split`` once (no augmentation, raw units) and return its :class:`Statistics`."""
    dataset = datamodule.make_dataset(split, raw=True)
    if max_samples is not None:
        from torch.utils.data import Subset

        dataset = Subset(dataset, range(min(max_samples, len(dataset))))  # type: ignore[assignment]
    loader = DataLoader(dataset, batch_size=None, shuffle=False,
                        num_workers=datamodule.num_workers if num_workers is None else num_workers)
    moments: dict[str, _RunningMoments] = {}
    nodata = {m: 0 for m in datamodule.modalities}
    counts: dict[int, int] = {}
    ignored = 0
    targets = _RunningMoments(1)
    ignore_index = datamodule.ignore_index
    samples = 0
    label_unit = "pixels"
    for sample in tqdm(loader, desc=f"statistics of {split}", unit="sample", disable=not progress):
        samples += 1
        for m, x in sample["image"].items():
            values = x.numpy().reshape(x.shape[0], -1)
            moments.setdefault(m, _RunningMoments(values.shape[0])).update(values)
            nodata[m] += int((~np.isfinite(values)).sum())
        if "mask" in sample or "label" in sample:
            target = (sample["mask"] if "mask" in sample else sample["label"]).numpy()
            if datamodule.task == "regression":
                flat = target.reshape(1, -1).astype(np.float64)
                if ignore_index is not None:
                    flat = np.where(flat == ignore_index, np.nan, flat)
                targets.update(flat)
                continue
            label_unit = "pixels" if "mask" in sample else "samples"
            flat = target.reshape(-1)
            keep = flat != ignore_index if ignore_index is not None else np.ones_like(flat, bool)
            ignored += int((~keep).sum())
            values, n = np.unique(flat[keep], return_counts=True)
            for v, c in zip(values.tolist(), n.tolist(), strict=True):
                counts[int(v)] = counts.get(int(v), 0) + int(c)
    names = datamodule.class_names or []
    class_counts = {}
    n_classes = max([datamodule.num_classes or 0] + [k + 1 for k in counts])
    for k in range(n_classes):
        class_counts[names[k] if k < len(names) else str(k)] = counts.get(k, 0)
    return Statistics(
        split=split, samples=samples,
        means={m: r.mean.tolist() for m, r in moments.items()}, stds={m: r.std.tolist() for m, r in moments.items()},
        valid_values={m: int(r.n.sum()) for m, r in moments.items()},
        nodata_values={m: nodata[m] for m in moments}, bands={m: datamodule.bands.get(m) for m in moments},
        class_counts=class_counts if datamodule.task != "regression" else {}, ignored_labels=ignored,
        label_unit=label_unit,
        target_mean=float(targets.mean[0]) if datamodule.task == "regression" and targets.n[0] else None,
        target_std=float(targets.std[0]) if datamodule.task == "regression" and targets.n[0] else None,
    )


# --------------------------------------------------------------------------------------------------- config


def _deep_merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for k, v in update.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_data_init_args(configs: Sequence[str | os.PathLike]) -> dict[str, Any]:
    """``data.init_args`` of one or more LightningCLI YAML configs (later files win, as in LightningCLI)."""
    merged: dict[str, Any] = {}
    for path in configs:
        merged = _deep_merge(merged, read_yaml_mapping(path, key="--config"))
    data = merged.get(DATA_KEY)
    if not isinstance(data, dict):
        raise ConfigError(f"no '{DATA_KEY}' section in {', '.join(map(str, configs))}", key=DATA_KEY)
    if "class_path" in data:
        class_path = str(data["class_path"])
        if class_path.rsplit(".", 1)[-1] not in ACCEPTED_CLASS_NAMES:
            raise ConfigError(f"compute-statistics reads GenericMultiModalDataModule configs, got {class_path!r}",
                              key=f"{DATA_KEY}.class_path")
        if not class_path.startswith("terramind_ft") and "." in class_path:
            warnings.warn(f"{DATA_KEY}.class_path {class_path} read as terramind_ft GenericMultiModalDataModule",
                          DataNotice, stacklevel=2)
        return dict(data.get("init_args") or {})
    return dict(data)


def build_datamodule(init_args: dict[str, Any]) -> GenericMultiModalDataModule:
    """Instantiate the data module from ``data.init_args`` alone, with config-key errors for bad arguments."""
    check_kwargs(GenericMultiModalDataModule, init_args, what="GenericMultiModalDataModule",
                 key=f"{DATA_KEY}.init_args")
    return GenericMultiModalDataModule(**init_args)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="terramind-ft compute-statistics",
        description="Per-modality per-band mean/std (raw units, nodata excluded) and label class frequencies of "
                    "a split, printed as YAML to paste under data.init_args (means:, stds:).")
    parser.add_argument("--config", "-c", action="append", required=True,
                        help="LightningCLI YAML config (repeatable; later files win)")
    parser.add_argument("--split", default="train", choices=("train", "val", "test", "predict"))
    parser.add_argument("--max-samples", type=int, default=None, help="only the first N samples of the split")
    parser.add_argument("--num-workers", type=int, default=None, help="DataLoader workers (default: the config's)")
    parser.add_argument("--output", "-o", default=None, help="also write the snippet to this file")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(list(argv) if argv is not None else None)
    try:
        datamodule = build_datamodule(load_data_init_args(args.config))
        stats = compute_statistics(datamodule, args.split, max_samples=args.max_samples,
                                   num_workers=args.num_workers, progress=not args.no_progress)
    except TerraMindFTError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    snippet = stats.to_yaml(", ".join(args.config))
    print(snippet, end="")
    if args.output:
        atomic_write_text(args.output, snippet)
        print(f"# written to {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
