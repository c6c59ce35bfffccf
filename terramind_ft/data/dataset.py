"""The multi-modal dataset: one :class:`~terramind_ft.data.files.SampleRecord` -> one standardised sample.

Per sample: read each modality (selected bands, float32) with its invalid-value mask (NaN/inf or the band's
declared nodata) -> standardise with the modality mean/std -> replace invalid values with ``no_data_replace``
(in *standardised* units, so the default 0 is the modality mean) -> read the label (nodata/NaN ->
``no_label_replace``) -> one joint transform over modalities, label and nodata masks.

A sample is ``{"image": {mod: float32 [C, H, W]}, "mask": int64 [H, W]`` (segmentation; float32 for
regression) or ``"label": int64 []`` (classification; float32 for scalar regression), ``"filename": {mod:
path, "mask" | "label": path}``, ``"nodata": bool [H, W]`` (any modality invalid) and ``"nodata_pixels": {mod:
int64 []}`` (pixels of that modality that were replaced). Batches are their default collation.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from rasterio.windows import Window
from torch.utils.data import BatchSampler, Dataset, Sampler

from terramind_ft.data.files import SampleRecord, parse_target
from terramind_ft.data.raster import read_raster, read_text_label, to_decibels
from terramind_ft.data.transforms import Compose
from terramind_ft.errors import DataError, RasterMismatchError

TEXT_LABEL_SUFFIXES = (".txt",)


@dataclass(frozen=True)
class ModalitySpec:
    """How to read and standardise one modality."""

    name: str
    band_indices: tuple[int, ...] | None  # 0-based file bands to read, in output order; None = all
    expected_bands: int | None  # band count the files must have; None = not known in advance
    bands: tuple[str, ...] | None  # output band names (None when unknown)
    mean: tuple[float, ...]
    std: tuple[float, ...]
    # Time steps held in one file (bands-as-time); band_indices then lists the file bands time step by time step,
    # and the modality is read as [C, T, H, W].
    time_steps: int = 1
    # data.init_args.constant_scale of the modality, already folded into mean and std (which are in file units);
    # kept to say values and statistics in the units the user configured
    constant_scale: float = 1.0
    # the files hold linear backscatter (power): read as 10 * log10(value), values <= 0 invalid
    linear_to_db: bool = False

    @property
    def num_bands(self) -> int:
        return len(self.mean)

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        shape = (-1, 1, 1, 1) if self.time_steps > 1 else (-1, 1, 1)
        return np.asarray(self.mean, np.float32).reshape(shape), np.asarray(self.std, np.float32).reshape(shape)


class MultiModalDataset(Dataset):
    """Samples of one split. ``dataset[i]`` reads all present modalities; ``dataset[(i, mods)]`` only ``mods``."""

    def __init__(
        self,
        records: Sequence[SampleRecord],
        specs: dict[str, ModalitySpec],
        *,
        task: str | None,
        split: str,
        transform: Compose | None = None,
        no_data_replace: float | None = 0.0,
        no_label_replace: int | float | None = -1,
        reduce_zero_label: bool = False,
        num_classes: int | None = None,
        nodata_to_ignore: bool = False,
        class_names: Sequence[str] | None = None,
        raw: bool = False,
    ):
        self.records = list(records)
        self.specs = specs
        self.modalities = list(specs)
        self.task = task
        self.split = split
        self.transform = transform if transform is not None else Compose([])
        self.no_data_replace = no_data_replace
        self.no_label_replace = no_label_replace
        self.reduce_zero_label = reduce_zero_label
        self.num_classes = num_classes
        self.nodata_to_ignore = nodata_to_ignore
        self.class_names = list(class_names) if class_names else None
        self.raw = raw
        self._stats = {m: spec.arrays() for m, spec in specs.items()}

    def __len__(self) -> int:
        return len(self.records)

    def modality_sets(self) -> list[tuple[str, ...]]:
        """The present modalities of every sample, in dataset order (batch samplers group by these)."""
        return [tuple(m for m in self.modalities if m in r.files) for r in self.records]

    # ------------------------------------------------------------------------------------------- reading

    def read_modality(self, record: SampleRecord, modality: str, *, window: Window | None = None
                      ) -> tuple[np.ndarray, np.ndarray]:
        """One modality of ``record`` in file units (its bands, ``[C, H, W]`` or ``[C, T, H, W]``) and its
        invalid mask; ``window`` reads a part of the file."""
        spec = self.specs[modality]
        path = record.files[modality]
        if spec.band_indices is not None:
            data, invalid = read_raster(path, modality, bands=list(spec.band_indices), window=window)
        else:
            data, invalid = read_raster(path, modality, window=window)
            if spec.expected_bands is not None and data.shape[0] != spec.expected_bands:
                raise RasterMismatchError(
                    f"{path} (modality {modality!r}) has {data.shape[0]} bands, expected {spec.expected_bands}; "
                    f"set data.init_args.dataset_bands.{modality} to the bands the files hold")
        if spec.linear_to_db:
            to_decibels(data, invalid)
        if spec.time_steps > 1:  # read time step by time step: [T*C, H, W] -> [C, T, H, W]
            t = spec.time_steps
            data = np.ascontiguousarray(data.reshape(t, -1, *data.shape[-2:]).transpose(1, 0, 2, 3))
            invalid = np.ascontiguousarray(invalid.reshape(t, -1, *invalid.shape[-2:]).transpose(1, 0, 2, 3))
        return data, invalid

    def _read_label(self, record: SampleRecord, shape: tuple[int, int] | None) -> tuple[torch.Tensor, str]:
        path = record.label_file
        if self.task in ("classification", "regression") and (
            record.target is not None or (path and path.lower().endswith(TEXT_LABEL_SUFFIXES))
        ):
            return self._scalar_label(record), path or ""
        assert path is not None
        data, invalid = read_raster(path, "label", bands=[0])
        label, invalid = data[0], invalid[0]
        if shape is not None and label.shape != shape:
            raise RasterMismatchError(f"label {path} is {label.shape[0]}x{label.shape[1]} but the images of sample "
                                      f"{record.prefix!r} are {shape[0]}x{shape[1]}")
        return torch.from_numpy(self.label_values(label, invalid, path)), path

    def label_values(self, label: np.ndarray, invalid: np.ndarray, path: str) -> np.ndarray:
        """A read label raster (or a window of one) as the samples hold it: invalid pixels -> the ignore index
        (``no_label_replace``), ``reduce_zero_label``, class range checked; float32 for regression."""
        if self.task == "regression":
            fill = math.nan if self.no_label_replace is None else float(self.no_label_replace)
            return np.where(invalid, fill, label).astype(np.float32)
        ignore = -1 if self.no_label_replace is None else int(self.no_label_replace)
        ignored = invalid | (label == ignore)
        if self.reduce_zero_label:
            ignored |= label == 0
            label = label - 1
        label = np.where(ignored, ignore, label).astype(np.int64)
        if self.num_classes is not None:
            bad = (~ignored) & ((label < 0) | (label >= self.num_classes))
            if bad.any():
                values = sorted({int(v) for v in np.unique(label[bad])})[:10]
                raise DataError(
                    f"label {path} holds class values {values} outside [0, {self.num_classes - 1}] "
                    f"(num_classes={self.num_classes}, ignore index {ignore}). Fix num_classes, set "
                    "no_label_replace to the label's nodata value, or reduce_zero_label: true for 1-based labels")
        return label

    def _scalar_label(self, record: SampleRecord) -> torch.Tensor:
        target = record.target
        if target is None:  # a per-sample text label file
            assert record.label_file is not None
            target = parse_target(read_text_label(record.label_file), task=self.task or "classification",
                                  class_names=self.class_names, where=record.label_file,
                                  key=f"data.init_args.{self.split}_label_data_root")
        if self.task == "regression":
            return torch.tensor(float(target), dtype=torch.float32)
        if self.num_classes is not None and not 0 <= int(target) < self.num_classes:
            raise DataError(f"sample {record.prefix!r}: class {target} outside [0, {self.num_classes - 1}] "
                            f"(label source {record.label_file})")
        return torch.tensor(int(target), dtype=torch.int64)

    # ------------------------------------------------------------------------------------------- sample

    def __getitem__(self, index: int | tuple[int, Sequence[str]]) -> dict:
        if isinstance(index, (tuple, list)):
            index, wanted = int(index[0]), tuple(index[1])
        else:
            wanted = None
        record = self.records[index]
        modalities = [m for m in self.modalities if m in record.files and (wanted is None or m in wanted)]
        if not modalities:
            raise DataError(f"sample {record.prefix!r} has none of the requested modalities {wanted}")

        images: dict[str, np.ndarray] = {}
        invalid_pixels: dict[str, np.ndarray] = {}
        shape: tuple[int, int] | None = None
        for m in modalities:
            data, invalid = self.read_modality(record, m)
            if shape is None:
                shape, first = data.shape[-2:], m
            elif data.shape[-2:] != shape:
                raise RasterMismatchError(
                    f"sample {record.prefix!r}: {record.files[m]} (modality {m!r}) is {data.shape[1]}x"
                    f"{data.shape[2]} but {record.files[first]} (modality {first!r}) is {shape[0]}x{shape[1]}")
            if self.raw:
                data[invalid] = np.nan
            else:
                mean, std = self._stats[m]
                data -= mean  # in place: ``data`` is a fresh float32 array of this read
                data /= std
                if self.no_data_replace is not None:
                    data[invalid] = self.no_data_replace
            images[m] = data
            invalid_pixels[m] = invalid.reshape(-1, *invalid.shape[-2:]).any(axis=0)  # any band, any time step

        sample: dict = {"filename": {m: record.files[m] for m in modalities}}
        tensors = {f"image/{m}": torch.from_numpy(images[m]) for m in modalities}
        tensors.update({f"nodata/{m}": torch.from_numpy(invalid_pixels[m])[None] for m in modalities})
        discrete = {f"nodata/{m}" for m in modalities}
        label_key = None
        if self.task is not None and (record.label_file is not None or record.target is not None):
            label, label_path = self._read_label(record, shape)
            if label.ndim == 2:
                label_key = "mask"
                if self.nodata_to_ignore and self.task != "regression":
                    any_invalid = np.logical_or.reduce([invalid_pixels[m] for m in modalities])
                    label[torch.from_numpy(any_invalid)] = int(self.no_label_replace if self.no_label_replace
                                                              is not None else -1)
                tensors["mask"] = label[None]
                discrete.add("mask")
            else:
                label_key = "label"
                sample["label"] = label
            sample["filename"][label_key] = label_path

        if not self.raw:
            tensors = self.transform(tensors, frozenset(discrete))
        # Flipped / rotated views are not copied here: collation stacks (copies) them once anyway.
        sample["image"] = {m: tensors[f"image/{m}"] for m in modalities}
        nodata = [tensors[f"nodata/{m}"][0] for m in modalities]
        sample["nodata"] = torch.stack(nodata).any(0)
        sample["nodata_pixels"] = {m: n.sum().to(torch.int64) for m, n in zip(modalities, nodata, strict=True)}
        if label_key == "mask":
            sample["mask"] = tensors["mask"][0]
        return sample


class ModalityBatchSampler(BatchSampler):
    """Batches whose samples share a set of modalities (so that they collate), optionally drawing a random
    subset of ``sample_num_modalities`` modalities per batch (only those files are read).

    Yields lists of ``(index, modalities)`` that :class:`MultiModalDataset` understands. The signature starts
    like ``BatchSampler(sampler, batch_size, drop_last)`` so that Lightning can re-create it around a
    distributed sampler.
    """

    def __init__(
        self,
        sampler: Sampler[int] | Sequence[int],
        batch_size: int,
        drop_last: bool,
        modality_sets: Sequence[tuple[str, ...]] = (),
        sample_num_modalities: int | None = None,
        seed: int | None = None,
    ):
        super().__init__(sampler, batch_size, drop_last)
        self.modality_sets = list(modality_sets)
        self.sample_num_modalities = sample_num_modalities
        self._rng = random.Random(seed)

    def _choose(self, available: tuple[str, ...]) -> tuple[str, ...]:
        k = self.sample_num_modalities
        if k is None or k >= len(available):
            return available
        chosen = set(self._rng.sample(available, k))
        return tuple(m for m in available if m in chosen)

    def __iter__(self) -> Iterator[list[tuple[int, tuple[str, ...]]]]:
        buckets: dict[tuple[str, ...], list[int]] = {}
        for index in self.sampler:
            group = self.modality_sets[index]
            bucket = buckets.setdefault(group, [])
            bucket.append(index)
            if len(bucket) == self.batch_size:
                mods = self._choose(group)
                yield [(i, mods) for i in bucket]
                buckets[group] = []
        if not self.drop_last:
            for group, bucket in buckets.items():
                if bucket:
                    mods = self._choose(group)
                    yield [(i, mods) for i in bucket]

    def __len__(self) -> int:
        counts: dict[tuple[str, ...], int] = {}
        # Iterating a RandomSampler would consume random state: count over the whole dataset when it is all used.
        indices = range(len(self.modality_sets)) if len(self.sampler) == len(self.modality_sets) else self.sampler
        for index in indices:
            counts[self.modality_sets[index]] = counts.get(self.modality_sets[index], 0) + 1
        if self.drop_last:
            return sum(n // self.batch_size for n in counts.values())
        return sum(-(-n // self.batch_size) for n in counts.values())
