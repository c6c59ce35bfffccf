"""Streaming scene prediction: rasters of any size in, a georeferenced, tiled, compressed GeoTIFF out.

:func:`predict_scene` never holds a whole scene. It walks the scene in rows of chips: for each row it reads one
strip of every modality raster (``crop`` rows, full width), standardises each chip with the modality's
mean/std (invalid values -> ``nodata_fill``, 0 by default, after standardisation, as the data module does),
runs the model on batches of chips and adds ``logits x blend weight`` into an accumulator that holds only the
rows still in flight (at most ``crop`` rows). Rows that no later chip can touch are normalised, turned into
classes (and probabilities) and handed to a block writer that writes whole 512-row block strips of the output.
Peak memory is therefore set by the scene *width*, ``crop``, ``batch_size`` and the band count, never by the
scene height. The chip geometry and blending are those of :mod:`terramind_ft.inference.tiling`, so the pixels
equal in-memory :func:`~terramind_ft.inference.tiling.tiled_inference` on the same standardised arrays.

Modalities on another grid (other CRS, resolution or extent) are warped on the fly onto the reference
modality's grid with a GDAL WarpedVRT: bilinear for continuous data, nearest for categorical modalities
(catalogue ``num_classes``), or what ``resampling`` says per modality; ``align=False`` refuses them instead.

Outputs: a uint8 class map (nodata 255, colour table, class names in the band description and tags), optionally
float32 probabilities and logits (one band per class, NaN nodata), or for regression float32 values. Each is
written to a hidden ``.<name>.partial-<pid>`` file next to it and renamed only when complete, as a
Cloud-Optimised GeoTIFF (``layout="cog"``, overviews included) or a tiled GeoTIFF (``layout="gtiff"``).

The end of the module plugs this into ``terramind-ft predict`` (see :func:`predict_scene_batch`).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.shutil
import torch
from rasterio.enums import MaskFlags, Resampling
from rasterio.errors import RasterioError
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from terramind_ft.data.raster import invalid_float_values, to_decibels
from terramind_ft.data.value_scale import ValueScaleNotice, centre_window, scale_mismatch
from terramind_ft.errors import (
    ConfigError,
    DataError,
    DataNotFoundError,
    InferenceError,
    RasterMismatchError,
)
from terramind_ft.inference.geotiff import (
    CLASS_NODATA,
    COLORMAP_DTYPES,
    FLOAT_OUT_DTYPES,
    SUFFIX,
    class_colormap,
    class_map_encoding,
    float_output_dtype,
    weights_tags,
)
from terramind_ft.inference.tiles import scene_sources
from terramind_ft.inference.tiling import (
    TilingParameters,
    chip_weight,
    output_tensor,
    padded_indices,
    plan_axis,
)
from terramind_ft.modalities import find_modality
from terramind_ft.ops import class_ids

log = logging.getLogger(__name__)

OUTPUT_BLOCK = 512  # internal tile size of the outputs (COG default)
# Transforms that agree to this fraction of a pixel are the same grid (rounding in stored GeoTIFF tags).
GRID_TOLERANCE = 1e-6


# ----------------------------------------------------------------------------------------- output helpers


def partial_path(path: Path) -> Path:
    """The hidden temporary name an output is written under until it is complete."""
    return path.with_name(f".{path.name}.partial-{os.getpid()}")


def overview_factors(height: int, width: int, block: int = OUTPUT_BLOCK // 2) -> list[int]:
    """Overview decimation factors 2, 4, 8, ... until the overview fits in one ``block``."""
    factors = []
    f = 2
    while max(height, width) / (f // 2) > block:
        factors.append(f)
        f *= 2
    return factors


# ------------------------------------------------------------------------------------------------- sources


@dataclass
class _Source:
    """One modality raster, opened (and warped when needed) onto the reference grid."""

    modality: str
    path: str
    reader: Any  # rasterio dataset or WarpedVRT on the reference grid
    indexes: list[int]  # 1-based band indexes to read
    nodata: list[float | None]  # per read band
    mean: np.ndarray  # [C] float32
    std: np.ndarray
    alpha_index: int | None = None  # band of the WarpedVRT alpha mask
    dataset_mask: bool = False  # the file carries a per-dataset (internal) mask
    warped: bool = False
    linear_to_db: bool = False  # linear backscatter in the file: standardised as 10 * log10(value)

    def read_rows(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Raw values ``[C, len(rows), W]`` (file dtype) of the image rows ``rows`` (any order, repeats allowed)
        and a per-pixel bool ``[len(rows), W]``: True where the pixel is masked (alpha / dataset mask)."""
        lo, hi = int(rows.min()), int(rows.max()) + 1
        raw, masked = self.read_window(Window(0, lo, self.reader.width, hi - lo), f"rows {lo}..{hi}")
        if lo == int(rows[0]) and hi - lo == len(rows) and np.all(np.diff(rows) == 1):
            return raw, masked
        return raw[:, rows - lo], masked[rows - lo]

    def read_window(self, window: Window, what: str) -> tuple[np.ndarray, np.ndarray]:
        """Raw values ``[C, h, w]`` (file dtype) of ``window`` and a per-pixel bool ``[h, w]``: True where the
        pixel is masked (alpha / dataset mask). ``what`` names the window in a read error."""
        try:
            raw = self.reader.read(self.indexes, window=window)
            if self.alpha_index is not None:
                masked = self.reader.read(self.alpha_index, window=window) == 0
            elif self.dataset_mask:
                masked = self.reader.read_masks(self.indexes[0], window=window) == 0
            else:
                masked = np.zeros(raw.shape[1:], bool)
        except RasterioError as exc:
            raise DataError(f"cannot read {what} of {self.path} (modality {self.modality!r}): {exc}. "
                            "The file may be truncated or corrupt.") from exc
        return raw, masked

    def invalid_band(self, raw: np.ndarray, c: int) -> np.ndarray | None:
        """Bool mask of band ``c`` of ``raw`` ``[C, ...]`` (declared nodata, NaN, inf or a fill value); None for an
        integer band without declared nodata."""
        # NaN, inf and undeclared fill values (-3.4e38, ...) are nodata, as in training
        invalid = invalid_float_values(raw[c], self.path, self.modality)
        value = self.nodata[c]
        if value is not None and not math.isnan(value):
            equal = raw[c] == np.asarray(value).astype(raw.dtype)  # compare in the file dtype: exact
            invalid = equal if invalid is None else invalid | equal
        if self.linear_to_db:  # no logarithm
            with np.errstate(invalid="ignore"):
                non_positive = ~(raw[c] > 0)
            invalid = non_positive if invalid is None else invalid | non_positive
        return invalid

    def standardise(self, chip: np.ndarray, masked: np.ndarray, fill: float, out: np.ndarray | None = None,
                    invalid: np.ndarray | None = None) -> np.ndarray:
        """``(chip - mean) / std`` of raw values ``[C, h, w]`` (into ``out`` if given, float32), with ``fill``
        where a band is invalid or ``masked`` ``[h, w]`` says so, as the data module's ``no_data_replace``. Each
        band's invalid pixels are also OR-ed into ``invalid`` ``[h, w]`` when it is given."""
        if out is None:
            out = np.empty(chip.shape, np.float32)
        values = chip
        if self.linear_to_db:
            with np.errstate(invalid="ignore", divide="ignore"):  # values <= 0 are invalid below
                np.log10(chip, out=out, casting="unsafe")
            out *= 10.0
            values = out
        np.subtract(values, self.mean[:, None, None], out=out, casting="unsafe")
        out /= self.std[:, None, None]
        for c in range(chip.shape[0]):
            band = self.invalid_band(chip, c)  # judged on the file's values (nodata, <= 0 for dB)
            if band is not None:
                np.putmask(out[c], band, fill)
                if invalid is not None:
                    invalid |= band
        if masked.any():
            out[:, masked] = fill
            if invalid is not None:
                invalid |= masked
        return out

    def invalid_pixels(self, raw: np.ndarray) -> np.ndarray:
        """``[...]`` bool: True where any band of ``raw`` ``[C, ...]`` is invalid (one band at a time, so that
        no ``[C, ...]`` mask is ever held)."""
        invalid = np.zeros(raw.shape[1:], bool)
        for c in range(raw.shape[0]):
            band = self.invalid_band(raw, c)
            if band is not None:
                invalid |= band
        return invalid


def _as_slice(idx: np.ndarray) -> slice | np.ndarray:
    """A slice for consecutive indices (a view instead of a copy), else the indices themselves."""
    if len(idx) and int(idx[-1]) - int(idx[0]) == len(idx) - 1 and np.all(np.diff(idx) == 1):
        return slice(int(idx[0]), int(idx[-1]) + 1)
    return idx


def _same_grid(a: Any, b: Any) -> bool:
    """Same CRS, size and transform, to ``GRID_TOLERANCE`` of a pixel across the whole raster."""
    if a.crs != b.crs or a.width != b.width or a.height != b.height:
        return False
    pixel = max(abs(a.transform.a), abs(a.transform.e), 1e-12)
    scale_tol = GRID_TOLERANCE * pixel / max(a.width, a.height)  # drift over the raster stays < tolerance
    ta, tb = tuple(a.transform)[:6], tuple(b.transform)[:6]
    return all(abs(ta[i] - tb[i]) <= (GRID_TOLERANCE * pixel if i in (2, 5) else scale_tol) for i in range(6))


def _open_sources(sources: Mapping[str, str | Path], reference: str, stack: ExitStack,
                  means: Mapping[str, Sequence[float]] | None, stds: Mapping[str, Sequence[float]] | None,
                  band_indexes: Mapping[str, Sequence[int]] | None, nodata: Mapping[str, float | None] | None,
                  resampling: Mapping[str, str] | None, align: bool, require_georeference: bool = True,
                  linear_to_db: Sequence[str] | None = None) -> tuple[list[_Source], Any]:
    means, stds = dict(means or {}), dict(stds or {})
    unknown = set(linear_to_db or ()) - set(sources)
    if unknown:
        raise ConfigError(f"has modalities {sorted(unknown)} that are not in sources {sorted(sources)}",
                          key="linear_to_db")
    band_indexes, nodata, resampling = dict(band_indexes or {}), dict(nodata or {}), dict(resampling or {})
    for what, mapping in (("means", means), ("stds", stds), ("band_indexes", band_indexes), ("nodata", nodata),
                          ("resampling", resampling)):
        unknown = set(mapping) - set(sources)
        if unknown:
            raise ConfigError(f"has modalities {sorted(unknown)} that are not in sources {sorted(sources)}", key=what)
    datasets = {}
    for modality, path in sources.items():
        path = str(path)
        if not os.path.exists(path):
            raise DataNotFoundError(f"scene raster not found: {path} (modality {modality!r})")
        try:
            datasets[modality] = stack.enter_context(rasterio.open(path))
        except RasterioError as exc:
            raise DataError(f"cannot open scene raster {path} (modality {modality!r}): {exc}") from exc
    ref = datasets[reference]
    if require_georeference and (ref.crs is None or ref.transform.is_identity):
        raise DataError(f"reference raster {ref.name} (modality {reference!r}) has no georeference (CRS and "
                        "transform); the output could not be placed on the map. Choose a georeferenced "
                        "reference_modality or add the georeference (gdal_edit.py -a_srs -a_ullr).")
    opened = []
    for modality, src in datasets.items():
        entry = find_modality(modality)
        count = len(band_indexes.get(modality, range(src.count)))
        mean = means.get(modality, entry.mean if entry is not None else None)
        std = stds.get(modality, entry.std if entry is not None else None)
        if mean is None or std is None:
            raise ConfigError(f"modality {modality!r} ({src.name}) is not in the TerraMind catalogue, so its "
                              f"standardisation is unknown; pass means[{modality!r}] and stds[{modality!r}] "
                              f"({count} values each)", key="means")
        if len(mean) != count or len(std) != count:
            raise RasterMismatchError(
                f"{src.name} (modality {modality!r}) provides {count} bands but the standardisation has "
                f"{len(mean)} means and {len(std)} stds. Select the bands the model was trained on with "
                f"band_indexes[{modality!r}] (1-based), or pass matching means/stds."
            )
        indexes = [int(i) for i in band_indexes.get(modality, range(1, src.count + 1))]
        bad = [i for i in indexes if not 1 <= i <= src.count]
        if bad:
            raise ConfigError(f"band indexes {bad} are outside 1..{src.count} of {src.name}",
                              key=f"band_indexes.{modality}")
        declared = nodata.get(modality, "file")
        nodata_values = [src.nodatavals[i - 1] for i in indexes] if declared == "file" else [declared] * len(indexes)
        source = _Source(modality=modality, path=src.name, reader=src, indexes=indexes,
                         nodata=[None if v is None else float(v) for v in nodata_values],
                         mean=np.asarray(mean, np.float32), std=np.asarray(std, np.float32),
                         linear_to_db=modality in (linear_to_db or ()))
        flags = src.mask_flag_enums[indexes[0] - 1]
        source.dataset_mask = MaskFlags.per_dataset in flags and MaskFlags.nodata not in flags
        if src is not ref and not _same_grid(src, ref):
            if src.crs is None:
                raise RasterMismatchError(f"{src.name} (modality {modality!r}) has no CRS and is not on the grid of "
                                          f"the reference {ref.name}; georeference it or resample it to that grid")
            if not align:
                raise RasterMismatchError(
                    f"{src.name} (modality {modality!r}: {src.width}x{src.height} px, {src.crs}, pixel "
                    f"{abs(src.transform.a):g}) is not on the grid of the reference {ref.name} ({ref.width}x"
                    f"{ref.height} px, {ref.crs}, pixel {abs(ref.transform.a):g}). Pass align=True to warp it on "
                    "the fly, or resample it first (gdalwarp -tr/-te/-t_srs)."
                )
            _check_overlap(src, ref, modality, reference)
            categorical = entry is not None and entry.is_categorical
            method = resampling.get(modality, "nearest" if categorical else "bilinear")
            try:
                method_enum = Resampling[method]
            except KeyError:
                raise ConfigError(f"unknown resampling {method!r}; use one of nearest, bilinear, cubic, average, "
                                  "mode", key=f"resampling.{modality}") from None
            src_nodata = src.nodatavals[indexes[0] - 1]
            vrt_args: dict[str, Any] = dict(crs=ref.crs, transform=ref.transform, width=ref.width,
                                            height=ref.height, resampling=method_enum)
            if src_nodata is not None:
                vrt_args.update(src_nodata=src_nodata, nodata=src_nodata)
            else:
                vrt_args.update(add_alpha=True)  # marks pixels outside the source's footprint
            vrt = stack.enter_context(WarpedVRT(src, **vrt_args))
            source.reader, source.warped = vrt, True
            source.alpha_index = vrt.count if src_nodata is None else None
            source.dataset_mask = False
            log.info("aligning %s (%s) onto the grid of %s with %s resampling", src.name, modality, ref.name, method)
        opened.append(source)
    return opened, ref


def _note_value_scale(sources: Sequence[_Source]) -> None:
    """A notice for each source whose values are on another scale than its standardisation (0..1 reflectances
    against the pretraining statistics, ...; :mod:`terramind_ft.data.value_scale`), judged on a centre window."""
    for source in sources:
        reader = source.reader
        window = centre_window(reader.height, reader.width, tuple(reader.block_shapes[0]))
        raw, masked = source.read_window(window, "the centre window")  # masked: outside a warped footprint, ...
        invalid = np.repeat(masked[None], raw.shape[0], axis=0)
        for c in range(raw.shape[0]):
            band = source.invalid_band(raw, c)
            if band is not None:
                invalid[c] |= band
        values = raw.astype(np.float32)
        if source.linear_to_db:
            to_decibels(values, invalid)
        entry = find_modality(source.modality)
        bands = entry.bands if entry is not None and len(entry.bands) == raw.shape[0] else None
        problem = scale_mismatch(values, invalid, source.mean.tolist(), source.std.tolist(),
                                 bands=bands, may_be_flat=bool(entry and entry.may_be_flat),
                                 decibels=bool(entry and entry.in_decibels))
        if problem:
            fix = (f"Pass linear_to_db=[{source.modality!r}]" if problem.kind == "linear"
                   else "Scale the file's values")
            warnings.warn(f"scene {source.path} (modality {source.modality!r}): {problem}. {fix}, or standardise "
                          f"with statistics of such files (means[{source.modality!r}] / stds[{source.modality!r}])",
                          ValueScaleNotice, stacklevel=3)


def _check_overlap(src: Any, ref: Any, modality: str, reference: str) -> None:
    from rasterio.warp import transform_bounds

    left, bottom, right, top = transform_bounds(src.crs, ref.crs, *src.bounds, densify_pts=21)
    r = ref.bounds
    if left >= r.right or right <= r.left or bottom >= r.top or top <= r.bottom:
        raise RasterMismatchError(f"{src.name} (modality {modality!r}) does not overlap the reference {ref.name} "
                                  f"(modality {reference!r}) at all; are these rasters of the same scene?")


# --------------------------------------------------------------------------------------------------- output


@dataclass
class _BlockWriter:
    """Collects finished output rows and writes them in whole block strips (no block is written twice)."""

    dataset: Any
    count: int
    dtype: str
    width: int
    block_rows: int
    buffer: np.ndarray = field(init=False)
    filled: int = 0  # rows in the buffer
    row: int = 0  # image row of buffer[0]

    def __post_init__(self) -> None:
        self.buffer = np.empty((self.count, self.block_rows, self.width), self.dtype)

    def add(self, rows: np.ndarray) -> None:
        start = 0
        while start < rows.shape[1]:
            n = min(self.block_rows - self.filled, rows.shape[1] - start)
            self.buffer[:, self.filled:self.filled + n] = rows[:, start:start + n]
            self.filled += n
            start += n
            if self.filled == self.block_rows:
                self.flush()

    def flush(self) -> None:
        if self.filled:
            self.dataset.write(self.buffer[:, :self.filled], window=Window(0, self.row, self.width, self.filled))
            self.row += self.filled
            self.filled = 0


@dataclass(frozen=True)
class SceneResult:
    """What :func:`predict_scene` wrote and how it went."""

    output_path: Path
    probabilities_path: Path | None
    logits_path: Path | None
    height: int
    width: int
    num_classes: int
    chips: int
    seconds: float
    nodata_pixels: int
    max_rows_in_flight: int  # accumulator rows held at once (<= crop)
    peak_buffer_bytes: int  # largest sum of the strip, accumulator and block buffers held at once

    @property
    def pixels_per_second(self) -> float:
        return self.height * self.width / max(self.seconds, 1e-9)


# -------------------------------------------------------------------------------------------------- predict


def predict_scene(
    model_forward: Callable[..., Any],
    sources: Mapping[str, str | Path],
    output_path: str | Path,
    *,
    means: Mapping[str, Sequence[float]] | None = None,
    stds: Mapping[str, Sequence[float]] | None = None,
    crop: int = 256,
    stride: int = 192,
    delta: int = 8,
    batch_size: int = 16,
    blend: str | None = "cosine",
    padding: str | None = "reflect",
    tiling: TilingParameters | Mapping[str, Any] | None = None,
    task: str = "segmentation",
    num_classes: int | None = None,
    class_names: Sequence[str] | None = None,
    write_probabilities: bool = False,
    probabilities_path: str | Path | None = None,
    write_logits: bool = False,
    logits_path: str | Path | None = None,
    reference_modality: str | None = None,
    band_indexes: Mapping[str, Sequence[int]] | None = None,
    nodata: Mapping[str, float | None] | None = None,
    nodata_fill: float | None = 0.0,
    resampling: Mapping[str, str] | None = None,
    align: bool = True,
    layout: str = "cog",
    compress: str = "deflate",
    overviews: bool = True,
    device: torch.device | str | None = None,
    verbose: bool = True,
    gdal_cache_mb: int = 128,
    tags: Mapping[str, str] | None = None,
    out_dtype: str | None = None,
    check_values: bool = True,
    linear_to_db: Sequence[str] | None = None,
    **kwargs: Any,
) -> SceneResult:
    """Predict a whole scene from rasters on disk and write the result as a georeferenced GeoTIFF.

    ``model_forward({modality: float32 [b, C, crop, crop]}, **kwargs)`` must return per-pixel logits
    ``[b, K, crop, crop]`` (or an object whose ``.output`` is that). ``sources`` maps modality names (catalogue
    names or aliases, as the model expects them) to raster paths; ``means``/``stds`` override the catalogue's
    pretraining statistics per modality; ``band_indexes`` selects 1-based bands per modality; ``nodata``
    overrides a modality's declared nodata value (None: no nodata value). Invalid input values (nodata, NaN,
    outside the footprint) become ``nodata_fill`` after standardisation (the data module's ``no_data_replace``:
    0 = the modality mean; None keeps NaN).

    The output grid is ``reference_modality``'s (default: the first source). Other modalities on a different
    grid are warped on the fly (``align=True``; ``resampling`` per modality overrides bilinear / nearest) or
    refused (``align=False``). A pixel is nodata in the output when any band of any modality is nodata, NaN or
    outside that modality's footprint there.

    Tiling: ``crop``, ``stride``, ``delta``, ``batch_size``, ``blend``, ``padding`` as in
    :func:`~terramind_ft.inference.tiling.tiled_inference`, or all at once as ``tiling`` (a
    :class:`TilingParameters` or a ``tiled_inference_parameters`` dict); ``average_patches=False`` is not
    supported here (blending is what makes strips independent of chip order).

    ``task="segmentation"``: a uint8 class map (argmax; one logit = binary, logit > 0), nodata 255, with a
    colour table and the class names (``class_names``, default ``class_0..``) in the band description and tags;
    ``write_probabilities`` also writes float32 softmax (sigmoid) probabilities to ``probabilities_path``
    (default ``<output stem>_probabilities.tif``) and ``write_logits`` the blended logits to ``logits_path``
    (default ``<output stem>_logits.tif``). ``task="regression"``: float32 values, nodata NaN.
    ``layout``: ``"cog"`` (Cloud-Optimised GeoTIFF with overviews) or ``"gtiff"`` (tiled GeoTIFF, internal
    overviews when ``overviews``). ``verbose`` shows a progress bar over rows of chips. ``gdal_cache_mb``
    bounds GDAL's block cache (part of the process memory). ``out_dtype`` writes the class map (values) in
    another type (TerraTorch's ``--out_dtype``; signed and float class maps get nodata -1). ``check_values``:
    a notice when a source's values are on another scale than its statistics (0..1 reflectances against the
    pretraining statistics; :mod:`terramind_ft.data.value_scale`). ``linear_to_db``: modalities whose files hold
    linear backscatter, standardised as ``10 * log10(value)`` (values <= 0 are nodata). ``kwargs`` go to
    ``model_forward``.
    """
    t0 = time.perf_counter()
    output_path = Path(output_path)
    if task not in ("segmentation", "regression"):
        raise ConfigError(f"must be 'segmentation' or 'regression', got {task!r}", key="task")
    if layout not in ("cog", "gtiff"):
        raise ConfigError(f"must be 'cog' or 'gtiff', got {layout!r}", key="layout")
    if not sources:
        raise ConfigError("no source rasters given; pass {modality: path}", key="sources")
    if isinstance(tiling, TilingParameters):
        params = tiling
    else:
        defaults = dict(crop=crop, stride=stride, delta=delta, batch_size=batch_size, blend=blend, padding=padding)
        params = TilingParameters.from_mapping({**defaults, **dict(tiling or {})})
    if not params.average_patches:
        raise ConfigError("average_patches=False is not supported by streaming scene prediction; the weighted "
                          "mean is what makes the output independent of the chip order", key="tiling.average_patches")
    reference = reference_modality or next(iter(sources))
    if reference not in sources:
        raise ConfigError(f"{reference!r} is not one of the source modalities {sorted(sources)}",
                          key="reference_modality")
    if class_names is not None:
        class_names = [str(c) for c in class_names]
        binary = num_classes == 1 and len(class_names) == 2  # one logit, two named classes
        if num_classes is not None and num_classes != len(class_names) and not binary:
            raise ConfigError(f"{len(class_names)} class_names for num_classes={num_classes}", key="class_names")
    for flag, name in ((write_probabilities, "write_probabilities"), (write_logits, "write_logits")):
        if flag and task != "segmentation":
            raise ConfigError("probabilities and logits exist for segmentation only", key=name)
    suffix = output_path.suffix or ".tif"
    prob_path = (Path(probabilities_path) if probabilities_path else
                 output_path.with_name(f"{output_path.stem}_probabilities{suffix}")) if write_probabilities else None
    logit_path = (Path(logits_path) if logits_path else
                  output_path.with_name(f"{output_path.stem}_logits{suffix}")) if write_logits else None
    kinds = {("values" if task == "regression" else "class_map"): output_path}
    if prob_path:
        kinds["probabilities"] = prob_path
    if logit_path:
        kinds["logits"] = logit_path
    if len(set(kinds.values())) != len(kinds):
        raise ConfigError(f"outputs would overwrite each other: {kinds}", key="probabilities_path")
    targets = list(kinds.values())
    for target in targets:
        target.parent.mkdir(parents=True, exist_ok=True)
    partials = {p: partial_path(p) for p in targets}
    staged: list[Path] = []  # layout "cog": the tiled GTiff written first, converted afterwards

    try:
        with ExitStack() as stack:
            stack.enter_context(rasterio.Env(GDAL_CACHEMAX=gdal_cache_mb * 1024 * 1024))
            opened, ref = _open_sources(sources, reference, stack, means, stds, band_indexes, nodata, resampling,
                                        align, linear_to_db=linear_to_db)
            if check_values:
                _note_value_scale(opened)
            stream = _Stream(
                model_forward=model_forward, sources=opened, params=params, height=ref.height, width=ref.width,
                device=torch.device(device) if device is not None else torch.device("cpu"), kwargs=kwargs,
                nodata_fill=np.nan if nodata_fill is None else float(nodata_fill),
            )
            out = _Outputs(stack=stack, ref=ref, task=task, num_classes=num_classes, class_names=class_names,
                           kinds=kinds, partials=partials, layout=layout, compress=compress,
                           overviews=overviews, tags=dict(tags or {}), staged=staged,
                           sources={s.modality: s.path for s in opened}, out_dtype=out_dtype)
            stream.run(out, verbose=verbose, desc=f"predict {output_path.name}")
            out.close()
            stack.close()  # sources and outputs closed before the conversion / rename
            if layout == "cog":
                _to_cog(out, compress)
        for target in targets:
            os.replace(partials[target], target)
    except BaseException:
        for p in [*partials.values(), *staged]:
            if p.exists():
                p.unlink()
        raise
    seconds = time.perf_counter() - t0
    log.info("wrote %s (%dx%d px, %d chips, %.1f s)", ", ".join(map(str, targets)), ref.width, ref.height,
             stream.chips, seconds)
    return SceneResult(
        output_path=output_path, probabilities_path=prob_path, logits_path=logit_path, height=ref.height,
        width=ref.width,
        num_classes=out.num_classes or 0, chips=stream.chips, seconds=seconds, nodata_pixels=out.nodata_pixels,
        max_rows_in_flight=stream.max_rows_in_flight, peak_buffer_bytes=stream.peak_buffer_bytes,
    )


@dataclass
class _Outputs:
    """Opens the output files once the model's channel count is known, and turns logit rows into pixels.

    ``kinds`` maps what is written (``class_map`` | ``values``, ``probabilities``, ``logits``) to its path."""

    stack: ExitStack
    ref: Any
    task: str
    num_classes: int | None
    class_names: list[str] | None
    kinds: dict[str, Path]
    partials: dict[Path, Path]
    layout: str
    compress: str
    overviews: bool
    tags: dict[str, str]
    staged: list[Path]
    sources: dict[str, str]
    out_dtype: str | None = None  # of the class map / values (default uint8 / float32)
    writers: dict[str, _BlockWriter] = field(default_factory=dict)
    files: dict[Path, Path] = field(default_factory=dict)  # target -> file written now (partial or staged)
    nodata_pixels: int = 0
    class_dtype: str = "uint8"
    class_nodata: int = CLASS_NODATA

    @property
    def targets(self) -> list[Path]:
        return list(self.kinds.values())

    def _check_classes(self, channels: int) -> list[str]:
        classes = 2 if channels == 1 else channels  # one logit: binary, class 1 where logit > 0
        if self.num_classes is not None and self.num_classes != classes and not (channels == 1 == self.num_classes):
            raise InferenceError(f"the model returns {channels} channel(s) per pixel but num_classes="
                                 f"{self.num_classes}; set num_classes to match the model head")
        self.class_dtype, self.class_nodata = class_map_encoding(self.out_dtype, classes)
        names = self.class_names or [f"class_{k}" for k in range(classes)]
        if len(names) != classes:
            raise ConfigError(f"{len(names)} class names for a model with {classes} classes", key="class_names")
        return names

    def open(self, channels: int) -> None:
        names = self._check_classes(channels) if self.task == "segmentation" else []
        self.num_classes, self.class_names = (len(names), names) if names else (channels, None)
        common = dict(driver="GTiff", width=self.ref.width, height=self.ref.height, crs=self.ref.crs,
                      transform=self.ref.transform, tiled=True, blockxsize=OUTPUT_BLOCK, blockysize=OUTPUT_BLOCK,
                      compress=self.compress, BIGTIFF="IF_SAFER")
        provenance = {"software": "terramind-ft", "sources": json.dumps(self.sources), **self.tags}
        for kind, target in self.kinds.items():
            if kind == "class_map":
                spec = dict(count=1, dtype=self.class_dtype, nodata=self.class_nodata,
                            predictor=3 if self.class_dtype in FLOAT_OUT_DTYPES else 2)
            else:
                spec = dict(count=channels, dtype=float_output_dtype(kind, self.out_dtype), nodata=float("nan"),
                            predictor=3)
            path = self.partials[target]
            if self.layout == "cog":
                path = path.with_name(path.name + ".gtiff")
                self.staged.append(path)
            self.files[target] = path
            dst = self.stack.enter_context(rasterio.open(path, "w", **common, **spec))
            dst.update_tags(**provenance)
            if kind == "class_map":
                if self.class_dtype in COLORMAP_DTYPES:
                    dst.write_colormap(1, class_colormap(len(names), self.class_nodata))
                dst.set_band_description(1, "class (" + ", ".join(f"{k}={n}" for k, n in enumerate(names)) + ")")
                dst.update_tags(1, **{f"CLASS_{k}": n for k, n in enumerate(names)})
            if names:
                dst.update_tags(CLASS_NAMES=json.dumps(names))
            if kind in ("probabilities", "logits"):
                what = "probability" if kind == "probabilities" else "logit"
                band_names = names if channels == len(names) else [f"{what} of {names[-1]}"]
                for b, name in enumerate(band_names, start=1):
                    dst.set_band_description(b, name)
            elif kind == "values":
                for b in range(1, channels + 1):
                    dst.set_band_description(b, f"value_{b - 1}" if channels > 1 else "value")
            self.writers[kind] = _BlockWriter(dst, spec["count"], spec["dtype"], self.ref.width, OUTPUT_BLOCK)

    def write(self, logits: np.ndarray, invalid: np.ndarray) -> None:
        """Finished rows: ``logits`` float32 ``[K, n, W]`` (already normalised), ``invalid`` bool ``[n, W]``."""
        self.nodata_pixels += int(invalid.sum())
        for kind, writer in self.writers.items():
            if kind == "class_map":
                if logits.shape[0] == 1:
                    rows = (logits[0] > 0).astype(self.class_dtype)[None]
                else:
                    rows = class_ids(torch.from_numpy(logits), dim=0).numpy().astype(self.class_dtype)[None]
                rows[:, invalid] = self.class_nodata
            elif kind == "probabilities":
                t = torch.from_numpy(logits)
                rows = (torch.sigmoid(t) if logits.shape[0] == 1 else torch.softmax(t, dim=0)).numpy()
                rows[:, invalid] = np.nan
            else:  # logits, values
                rows = logits.copy()
                rows[:, invalid] = np.nan
            writer.add(rows)

    def buffer_bytes(self) -> int:
        return sum(w.buffer.nbytes for w in self.writers.values())

    def close(self) -> None:
        for writer in self.writers.values():
            writer.flush()
        if self.layout == "gtiff" and self.overviews:
            factors = overview_factors(self.ref.height, self.ref.width)
            for kind, writer in self.writers.items():
                dst = writer.dataset
                if factors:
                    method = Resampling.nearest if kind == "class_map" else Resampling.average
                    dst.build_overviews(factors, method)
                    dst.update_tags(ns="rio_overview", resampling=method.name)


def _to_cog(out: _Outputs, compress: str) -> None:
    """Convert the staged tiled GeoTIFFs to Cloud-Optimised GeoTIFFs (GDAL's COG driver streams block-wise)."""
    for kind, target in out.kinds.items():
        staged = out.files[target]
        categorical = kind == "class_map"
        options = dict(driver="COG", compress=compress, blocksize=OUTPUT_BLOCK, BIGTIFF="IF_SAFER",
                       predictor="YES", overview_resampling="nearest" if categorical else "average")
        if not out.overviews:
            options["overviews"] = "NONE"
        rasterio.shutil.copy(staged, out.partials[target], **options)
        staged.unlink()


@dataclass
class _Stream:
    """The chip loop: reads strips, batches chips, accumulates blended logits for the rows in flight."""

    model_forward: Callable[..., Any]
    sources: list[_Source]
    params: TilingParameters
    height: int
    width: int
    device: torch.device
    kwargs: dict[str, Any]
    chips: int = 0
    max_rows_in_flight: int = 0
    peak_buffer_bytes: int = 0
    nodata_fill: float = 0.0  # standardised value given to invalid inputs
    strip_bytes: int = 0  # raw strips of the chip row being cut
    batch_bytes: int = 0  # chips (numpy and tensor) and logits of the batch in flight

    def run(self, out: _Outputs, verbose: bool, desc: str) -> None:
        p = self.params
        delta = p.effective_delta
        padded = p.padding != "none"
        self.rows = plan_axis(self.height, p.h_crop, p.h_stride, delta, padded, p.blend)
        self.cols = plan_axis(self.width, p.w_crop, p.w_stride, delta, padded, p.blend)
        self.col_idx = [padded_indices(c.start, c.size, self.width, p.padding) for c in self.cols]
        self.out = out
        self.buf_rows = max(r.keep_hi - r.keep_lo for r in self.rows)
        self.acc: np.ndarray | None = None  # [K, buf_rows, W] sum of logits x weight
        self.wsum = np.zeros((self.buf_rows, self.width), np.float32)
        self.invalid = np.zeros((self.buf_rows, self.width), bool)
        self.buf_lo = 0  # image row of acc[:, 0]
        self.current_row = -1
        self.pending_invalid: dict[int, np.ndarray] = {}
        progress = None
        if verbose:
            from tqdm.auto import tqdm

            progress = tqdm(total=len(self.rows), desc=desc, unit="strip")
        self.progress = progress
        # One input buffer per modality and batch (allocated when its first chip is cut): chips are
        # standardised straight into it.
        self.batch_shapes = {src.modality: (p.batch_size, len(src.indexes), self.rows[0].size, self.cols[0].size)
                             for src in self.sources}
        self.batch_inputs: dict[str, np.ndarray] = {}
        try:
            batch: list[tuple[int, int]] = []
            for i, j in self._fill_chips():
                batch.append((i, j))
                if len(batch) == p.batch_size:
                    self._run_batch(batch)
                    batch = []
            if batch:
                self._run_batch(batch)
            self._finish_rows(self.height)
            if progress is not None:
                progress.update(1)
        finally:
            if progress is not None:
                progress.close()

    # -- reading
    def _fill_chips(self) -> Iterator[tuple[int, int]]:
        """Chip positions in row-major order; before yielding one, its standardised values are written into
        the next free slot of ``batch_inputs``. One strip per modality is read per row of chips."""
        p = self.params
        slot = 0
        for i, r in enumerate(self.rows):
            row_idx, row_valid = padded_indices(r.start, r.size, self.height, p.padding)
            strips = []
            invalid_rows = np.zeros((r.keep_hi - r.keep_lo, self.width), bool)
            keep = slice(r.offset, r.offset + r.keep_hi - r.keep_lo)
            strip_bytes = 0
            for src in self.sources:
                raw, masked = src.read_rows(row_idx)
                invalid_rows |= src.invalid_pixels(raw[:, keep]) | masked[keep]
                strips.append((src, raw, masked))
                strip_bytes += raw.nbytes + masked.nbytes + invalid_rows.nbytes
            self.pending_invalid[i] = invalid_rows
            self.strip_bytes = strip_bytes
            self._note_memory()
            for j in range(len(self.cols)):
                col_idx, col_valid = self.col_idx[j]
                cols = _as_slice(col_idx)
                if slot == 0:  # fresh buffers per batch: the model may keep references to its inputs
                    self.batch_inputs = {}  # (dropped first, so that two batches are never held at once)
                    self.batch_inputs = {m: np.empty(shape, np.float32) for m, shape in self.batch_shapes.items()}
                for src, raw, masked in strips:
                    values = self.batch_inputs[src.modality][slot]
                    chip = raw[:, :, cols]
                    src.standardise(chip, masked[:, cols], self.nodata_fill, out=values)
                    if row_valid is not None or col_valid is not None:  # constant padding: zeros outside
                        rv = row_valid if row_valid is not None else np.ones(len(row_idx), bool)
                        cv = col_valid if col_valid is not None else np.ones(len(col_idx), bool)
                        values[:, ~(rv[:, None] & cv[None, :])] = 0.0
                yield i, j
                slot = (slot + 1) % p.batch_size
            del strips

    # -- model
    def _run_batch(self, batch: list[tuple[int, int]]) -> None:
        n = len(batch)
        inputs = {name: torch.from_numpy(buf[:n]).to(self.device) for name, buf in self.batch_inputs.items()}
        chip_shape = (self.rows[batch[0][0]].size, self.cols[batch[0][1]].size)
        with torch.no_grad():
            output = self.model_forward(inputs, **self.kwargs)
        logits = output_tensor(output, chip_shape).detach().float().cpu().numpy()
        self.batch_bytes = sum(b.nbytes for b in self.batch_inputs.values()) + logits.nbytes
        if logits.shape[0] != n:
            raise InferenceError(f"model_forward returned {logits.shape[0]} outputs for a batch of {n} chips")
        if self.acc is None:
            self.out.open(logits.shape[1])
            self.acc = np.zeros((logits.shape[1], self.buf_rows, self.width), np.float32)
        for k, (i, j) in enumerate(batch):
            if i != self.current_row:
                self._start_row(i)
            r, c = self.rows[i], self.cols[j]
            w = chip_weight(r, c)
            rs = slice(r.keep_lo - self.buf_lo, r.keep_hi - self.buf_lo)
            cs = slice(c.keep_lo, c.keep_hi)
            kept = logits[k, :, r.offset:r.offset + r.keep_hi - r.keep_lo, c.offset:c.offset + c.keep_hi - c.keep_lo]
            self.acc[:, rs, cs] += kept * w
            self.wsum[rs, cs] += w
            self.chips += 1

    # -- accumulation
    def _start_row(self, i: int) -> None:
        """Rows above chip row ``i``'s first kept row are final: write them, then slide the buffer down."""
        r = self.rows[i]
        self._finish_rows(r.keep_lo)
        invalid = self.pending_invalid.pop(i)
        self.invalid[r.keep_lo - self.buf_lo:r.keep_hi - self.buf_lo] = invalid
        self.max_rows_in_flight = max(self.max_rows_in_flight, r.keep_hi - self.buf_lo)
        if self.progress is not None and self.current_row >= 0:
            self.progress.update(1)
        self.current_row = i

    def _finish_rows(self, upto: int) -> None:
        n = upto - self.buf_lo
        if n <= 0 or self.acc is None:
            return
        wsum = self.wsum[:n]
        if not np.all(wsum > 0):
            missing = int((wsum <= 0).sum())
            raise InferenceError(f"{missing} pixels in rows {self.buf_lo}..{upto} got no prediction; this is a bug "
                                 f"in the chip plan (crop/stride/delta {self.params}), please report it")
        logits = self.acc[:, :n] / wsum
        self.out.write(logits, self.invalid[:n])
        self._note_memory()
        # Slide the buffers: rows [n, buf_rows) move to the top, the tail is cleared for the next chip row.
        keep = self.buf_rows - n
        self.acc[:, :keep] = self.acc[:, n:]
        self.acc[:, keep:] = 0
        self.wsum[:keep] = self.wsum[n:]
        self.wsum[keep:] = 0
        self.invalid[:keep] = self.invalid[n:]
        self.invalid[keep:] = False
        self.buf_lo = upto

    def _note_memory(self) -> None:
        held = self.strip_bytes + self.batch_bytes + self.wsum.nbytes + self.invalid.nbytes + self.out.buffer_bytes()
        if self.acc is not None:
            held += 2 * self.acc.nbytes  # the accumulator and the normalised rows handed to the writer
        self.peak_buffer_bytes = max(self.peak_buffer_bytes, held)


# ---------------------------------------------------------------------------------------- terramind-ft predict
#
# With ``tiled_inference_parameters`` on the task, ``terramind-ft predict`` streams every predict sample from
# its files: the data module's predict loader yields file references only (no pixels, see scene_dataloader),
# and the task's predict_step hands each one to predict_scene_batch, which writes the outputs where the
# prediction writer would and reports them to it (``{"written": {input: [outputs]}}``).


class SceneDataset(torch.utils.data.Dataset):
    """One item per predict sample: its files and how to standardise them; no pixels are read here."""

    def __init__(self, records: Sequence[Any], specs: Mapping[str, Any], nodata_fill: float | None):
        self.records = list(records)
        self.specs = dict(specs)
        self.nodata_fill = nodata_fill

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Any]:
        scene = scene_sources(self.specs, self.records[index], self.nodata_fill)
        return {"filename": dict(scene["sources"]), "scene": scene}


def _collate_scenes(items: list[dict[str, Any]]) -> dict[str, Any]:
    modalities = list(dict.fromkeys(m for item in items for m in item["filename"]))
    return {"filename": {m: [item["filename"].get(m) for item in items] for m in modalities},
            "scene": [item["scene"] for item in items]}


def scene_dataloader(datamodule: Any) -> torch.utils.data.DataLoader:
    """The predict loader of a streaming ``predict``: one scene (file references) per batch."""
    records = datamodule.records("predict")
    specs = datamodule.split_specs("predict") if hasattr(datamodule, "split_specs") else datamodule.specs
    dataset = SceneDataset(records, specs, getattr(datamodule, "no_data_replace", 0.0))
    return torch.utils.data.DataLoader(dataset, batch_size=1, shuffle=False, collate_fn=_collate_scenes)


def _prediction_writer(trainer: Any) -> tuple[Path, Any]:
    """Where the trainer's prediction writer puts files, and the writer (None when there is none)."""
    for callback in getattr(trainer, "callbacks", []) or []:
        if callable(getattr(callback, "resolved_dir", None)):
            return Path(callback.resolved_dir(trainer)), callback
    return Path(trainer.default_root_dir) / "predictions", None


def predict_scene_batch(task: Any, batch: Mapping[str, Any]) -> dict[str, Any]:
    """``predict_step`` of a streamed batch: :func:`predict_scene` for each scene with the task's forward,
    tiling, class names and requested outputs. Returns ``{"written": {input: [outputs]}, "filename": ...}``."""
    out_dir, writer = _prediction_writer(task.trainer)
    reference = getattr(writer, "reference_modality", None)
    claim = getattr(writer, "_claim", None)  # refuses two inputs that would write the same output file
    pixel_task = "regression" if task.task == "regression" else "segmentation"
    outputs = set(getattr(task, "outputs", ()) or ())
    written: dict[str, list[str]] = {}
    for scene in batch["scene"]:
        sources = scene["sources"]
        ref = reference if reference in sources else next(iter(sources))
        stem = Path(sources[ref]).stem
        kind = "values" if pixel_task == "regression" else "class_map"
        output = out_dir / f"{stem}{SUFFIX[kind]}.tif"
        if claim is not None:
            claim(output, sources[ref])
        result = predict_scene(
            task.forward, sources, output, means=scene["means"], stds=scene["stds"],
            band_indexes=scene["band_indexes"] or None, nodata_fill=scene["nodata_fill"], tiling=task.tiling,
            linear_to_db=scene.get("linear_to_db"),
            task=pixel_task, class_names=task.class_names if pixel_task == "segmentation" else None,
            write_probabilities="probabilities" in outputs,
            probabilities_path=out_dir / f"{stem}{SUFFIX['probabilities']}.tif",
            write_logits="logits" in outputs, logits_path=out_dir / f"{stem}{SUFFIX['logits']}.tif",
            reference_modality=ref, device=task.device, verbose=True,
            tags=weights_tags(getattr(task, "weights_provenance", None)), out_dtype=getattr(writer, "out_dtype", None),
            check_values=False,  # the data module's setup checked these files against the same statistics
        )
        written[sources[ref]] = [str(p) for p in (result.output_path, result.probabilities_path, result.logits_path)
                                 if p is not None]
    return {"written": written, "filename": batch["filename"]}
