"""Values on another scale than the statistics that standardise them: the silent failure of EO fine-tuning.

Three cases train and predict without any error and give a model that learns nothing or paints one class:

* reflectances stored as 0..1, standardised with statistics of reflectance x 10000 (TerraMind's pretraining
  statistics): each band reaches the model as one constant;
* digital numbers standardised with statistics of 0..1 reflectances: values in the thousands of standard
  deviations;
* linear backscatter standardised with dB statistics: every pixel a few standard deviations above the mean.

When a split is set up, a centre window of a few of its samples is read and compared with the statistics of each
modality (after ``constant_scale``, in file units); a mismatch is one notice naming the modality, a file, the
figures and the fix. It is a notice, not an error: data of one's own can be odd on purpose.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from rasterio.windows import Window

from terramind_ft.data.files import DataNotice
from terramind_ft.data.raster import cached_header
from terramind_ft.modalities import find_modality

KEY = "data.init_args"
SAMPLES = 3  # spread over the split: first, middle, last
WINDOW = 256  # pixels per side read from the centre of each file (a large scene is not read whole)
MIN_VALUES = 64  # valid values a band needs to be judged
MAX_VALUES = 16384  # values per band that are judged (a regular subsample of more)
# Values spanning less than this fraction of the statistics' standard deviation are on a smaller scale: 0..1
# reflectance against statistics of reflectance x 10000 spans ~1e-4, a chip of open water in the right units ~0.03.
SMALL_SPREAD = 0.01
# A median |standardised value| above this is a larger scale: the brightest cloud in the right units is ~10.
LARGE_LEVEL = 50.0


@dataclass(frozen=True)
class ScaleProblem:
    """What :func:`scale_mismatch` found: ``kind`` picks the fix (``larger`` / ``smaller``: a factor or statistics
    of one's own; ``linear``: read linear backscatter as dB)."""

    kind: Literal["larger", "smaller", "linear"]
    text: str

    def __str__(self) -> str:
        return self.text


def scale_mismatch(values: np.ndarray, invalid: np.ndarray, mean: Sequence[float], std: Sequence[float], *,
                   bands: Sequence[str] | None = None, may_be_flat: bool = False,
                   decibels: bool = False) -> ScaleProblem | None:
    """What is wrong with the scale of ``values`` (``[C, ...]`` in file units) against per-band ``mean``/``std``
    of the same units, or None. ``may_be_flat``: a uniform sample is real for this modality (flat terrain);
    ``decibels``: the statistics are dB backscatter, so values that are all positive are linear power."""
    values = values.reshape(values.shape[0], -1)
    invalid = invalid.reshape(invalid.shape[0], -1)
    judged = []  # (band index, spread of the standardised values, median |standardised|, valid values)
    for b in range(values.shape[0]):
        v = values[b][~invalid[b]]
        v = v[:: max(1, v.size // MAX_VALUES)].astype(np.float64)  # a regular subsample: medians stay cheap
        if v.size >= MIN_VALUES and std[b] > 0:
            judged.append((b, float(v.std() / std[b]), float(np.median(np.abs(v - mean[b]))) / std[b], v))
    if not judged:
        return None
    name = (lambda b: bands[b]) if bands else (lambda b: f"band {b + 1}")
    b, _, _, v = sorted(judged, key=lambda j: j[1])[len(judged) // 2]  # the band of median spread
    example = (f"{name(b)}: values around {np.median(v):.4g}, statistics mean {mean[b]:.4g} std {std[b]:.4g}; "
               f"median over {len(judged)} band(s)")
    # how many times the statistics' magnitude exceeds the values' (a power of ten is what a user can act on)
    factor = 10 ** float(np.median([_log_ratio(max(abs(mean[j[0]]), std[j[0]]), max(abs(float(np.median(j[3]))),
                                                                                        float(j[3].std())))
                                    for j in judged]))
    level = float(np.median([j[2] for j in judged]))
    if level > LARGE_LEVEL:
        return ScaleProblem("larger", f"its values lie {level:.3g} standard deviations "
                            f"from the statistics' mean ({example}): they are on a scale about "
                            f"{_power_of_ten(1 / factor)} times larger than the statistics, e.g. digital numbers "
                            "(reflectance x 10000) against statistics of 0..1 reflectances")
    if decibels and all(m < 0 for m in mean) and np.mean([(j[3] >= 0).mean() for j in judged]) > 0.99:
        return ScaleProblem("linear", f"the statistics are centred below zero (dB backscatter; {example}) but its "
                            "values are all positive: linear backscatter, which the model takes as 10 * log10(value)")
    spreads = [j[1] for j in judged]
    if not may_be_flat and sum(s > 0 for s in spreads) * 2 > len(spreads) and np.median(spreads) < SMALL_SPREAD:
        return ScaleProblem("smaller", f"its values span only {np.median(spreads):.2g} of the statistics' standard "
                            f"deviation ({example}): they are on a scale about {_power_of_ten(factor)} times smaller "
                            "than the statistics, e.g. reflectances stored as 0..1 against statistics of reflectance "
                            "x 10000 (TerraMind's)")
    return None


def _log_ratio(a: float, b: float) -> float:
    return math.log10(a / b) if a > 0 and b > 0 else 0.0


def _power_of_ten(ratio: float) -> str:
    return f"1e{round(math.log10(ratio))}" if ratio > 0 and math.isfinite(ratio) else "?"


def centre_window(height: int, width: int, block: tuple[int, int]) -> Window:
    """A window of at most :data:`WINDOW` pixels a side near the centre of a raster, on the raster's own blocks
    where they are tiles (a 512 px chip in 256 px tiles then decodes one tile, not the four around its centre)."""
    rows, cols = min(WINDOW, height), min(WINDOW, width)
    row, col = (height - rows) // 2, (width - cols) // 2
    if 1 < block[0] < height and block[1] < width:  # tiled: the tile that holds the centre pixel
        row, col = (height // 2) // block[0] * block[0], (width // 2) // block[1] * block[1]
        rows, cols = min(rows, block[0], height - row), min(cols, block[1], width - col)
    return Window(col, row, cols, rows)


class ValueScaleNotice(DataNotice):
    """A modality's values are on another scale than its statistics (``terramind-ft check`` lists these in its
    ``[values]`` step instead)."""


def check_value_scale(dataset, split: str) -> list[str]:
    """The modalities of ``dataset`` (a :class:`MultiModalDataset`) whose values do not match their statistics,
    judged on up to :data:`SAMPLES` samples of ``split``: one :class:`ValueScaleNotice` each, and their messages."""
    records = dataset.records
    problems: list[str] = []
    if not records:
        return problems
    picks = sorted({0, len(records) // 2, len(records) - 1})[:SAMPLES]
    for modality, spec in dataset.specs.items():
        chunks, masks, files = [], [], []
        for i in picks:
            path = records[i].files.get(modality)
            if path is None:
                continue
            header = cached_header(path, modality)
            window = centre_window(header.height, header.width, header.block)
            data, invalid = dataset.read_modality(records[i], modality, window=window)
            chunks.append(data.reshape(data.shape[0], -1))
            masks.append(invalid.reshape(invalid.shape[0], -1))
            files.append(path)
        if not chunks:
            continue
        catalogued = find_modality(modality)
        scale = spec.constant_scale  # values and statistics as the model sees them (the test is scale-free)
        problem = scale_mismatch(np.concatenate(chunks, axis=1) * scale, np.concatenate(masks, axis=1),
                                 [v * scale for v in spec.mean], [v * scale for v in spec.std],
                                 bands=spec.bands, may_be_flat=bool(catalogued and catalogued.may_be_flat),
                                 decibels=bool(catalogued and catalogued.in_decibels))
        if problem:
            scaled = f", values x constant_scale {scale:g}" if scale != 1.0 else ""
            fix = (f"Read them as dB with {KEY}.linear_to_db: [{modality}]" if problem.kind == "linear"
                   else f"Scale the files' values with {KEY}.constant_scale.{modality}")
            problems.append(
                f"{split} modality {modality!r} ({len(files)} sample(s), e.g. {files[0]}{scaled}): {problem}. "
                f"{fix}, or standardise with statistics of these files ({KEY}.means.{modality} / stds.{modality}; "
                "terramind-ft compute-statistics prints them)")
            warnings.warn(problems[-1], ValueScaleNotice, stacklevel=2)
    return problems
