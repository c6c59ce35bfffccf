"""Raster I/O: headers, whole or windowed reads with their nodata mask, and atomic GeoTIFF writes.

Everything that touches rasterio for the data module lives here, so that errors always name the file and the
modality, and so that the rest of ``terramind_ft.data`` works on numpy arrays only.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.errors import RasterioError
from rasterio.windows import Window

from terramind_ft.errors import DataError, DataNotFoundError
from terramind_ft.io import atomic_path

log = logging.getLogger(__name__)

# File extensions read as plain text (classification labels: one class index or name per file).
TEXT_LABEL_EXTENSIONS = (".txt",)


@dataclass(frozen=True)
class RasterHeader:
    """What the data module needs to know about a raster without reading its pixels."""

    path: str
    count: int
    height: int
    width: int
    dtype: str
    crs: str | None  # WKT-free short form (e.g. "EPSG:32630") when possible
    transform: tuple[float, ...] | None  # affine (a, b, c, d, e, f); None when not georeferenced
    nodata: tuple[float | None, ...]  # declared nodata per band
    descriptions: tuple[str | None, ...]
    block: tuple[int, int] = (1, 1)  # (rows, columns) of the first band's blocks: tiles, or strips of whole rows

    @property
    def georeferenced(self) -> bool:
        return self.crs is not None and self.transform is not None

    @property
    def pixel_size(self) -> float:
        """Absolute pixel width in CRS units (1.0 when not georeferenced)."""
        return abs(self.transform[0]) if self.transform else 1.0


def _where(path: str | Path, modality: str | None) -> str:
    return f"{path}" + (f" (modality {modality!r})" if modality else "")


def read_header(path: str | Path, modality: str | None = None, *, verify_last_block: bool = False) -> RasterHeader:
    """Open ``path`` and return its header.

    ``verify_last_block`` also decodes the block holding the last pixel of every band, which catches files
    truncated by an interrupted copy at the cost of one block read (not the whole file).
    """
    path = str(path)
    if not os.path.exists(path):
        raise DataNotFoundError(f"raster not found: {_where(path, modality)}")
    try:
        with rasterio.open(path) as src:
            crs = None
            if src.crs is not None:
                epsg = src.crs.to_epsg()
                crs = f"EPSG:{epsg}" if epsg else src.crs.to_string()
            georef = crs is not None and not src.transform.is_identity
            header = RasterHeader(
                path=path, count=src.count, height=src.height, width=src.width, dtype=src.dtypes[0], crs=crs,
                transform=tuple(src.transform)[:6] if georef else None,
                nodata=tuple(src.nodatavals), descriptions=tuple(src.descriptions),
                block=tuple(src.block_shapes[0]) if src.count else (1, 1),
            )
            if verify_last_block:
                src.read(window=Window(src.width - 1, src.height - 1, 1, 1))
    except RasterioError as exc:
        raise DataError(
            f"cannot read raster {_where(path, modality)}: {exc}. The file is corrupt or truncated (an "
            "interrupted download or copy?); replace it or remove the sample from the split file."
        ) from exc
    return header


# Float values this far from zero are fill values, not measurements: no modality comes near (reflectance x 1e4,
# backscatter in dB or linear, metres of elevation). A file that uses float32's extremes (-3.4e38) or NetCDF's
# default fill (9.97e36) without declaring nodata would otherwise reach the model and give a NaN loss.
FILL_MAGNITUDE = 1e30
_FILL_NOTED: set[str] = set()


def invalid_float_values(raw: np.ndarray, path: str, modality: str | None) -> np.ndarray | None:
    """True where a float array is NaN, +-inf or a fill value (magnitude >= :data:`FILL_MAGNITUDE`); None for
    integer arrays. Fill values get one notice per file (:func:`note_fill_values`)."""
    if raw.dtype.kind != "f":
        return None
    with np.errstate(invalid="ignore"):
        invalid = ~(np.abs(raw) < FILL_MAGNITUDE)  # one pass: NaN and inf compare False as well
    if path not in _FILL_NOTED and invalid.any():
        note_fill_values(path, modality, invalid & np.isfinite(raw), raw)
    return invalid


def note_fill_values(path: str, modality: str | None, mask: np.ndarray, raw: np.ndarray) -> None:
    """One notice per file that uses undeclared fill values: they are treated as nodata."""
    if path in _FILL_NOTED or not mask.any():
        return
    _FILL_NOTED.add(path)
    example = float(raw[mask].flat[0])
    log.warning("notice: %s: %d pixel values like %.4g without a declared nodata; treated as nodata (declare the "
                "file's nodata, e.g. gdal_edit.py -a_nodata %.4g, to silence this)", _where(path, modality),
                int(mask.sum()), example, example)


def read_raster(
    path: str | Path, modality: str | None = None, *, bands: list[int] | None = None, window: Window | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Read ``path`` as float32 ``[C, H, W]`` plus a bool ``[C, H, W]`` mask, True where the value is invalid.

    Invalid = the band's declared nodata value, or NaN / inf. ``bands`` are 0-based indices to keep (in that
    order); ``window`` reads a sub-window. Values are returned in raw file units.
    """
    path = str(path)
    if not os.path.exists(path):
        raise DataNotFoundError(f"raster not found: {_where(path, modality)}")
    try:
        with rasterio.open(path) as src:
            indexes = [b + 1 for b in bands] if bands is not None else list(range(1, src.count + 1))
            raw = src.read(indexes, window=window)
            nodata = [src.nodatavals[i - 1] for i in indexes]
    except (RasterioError, ValueError, IndexError) as exc:
        raise DataError(f"cannot read raster {_where(path, modality)}: {exc}") from exc
    data = raw.astype(np.float32, copy=False)
    # Integer rasters cannot hold NaN: skip that pass over the data (a third of the read time of S2 chips).
    invalid = invalid_float_values(raw, path, modality)
    if invalid is None:
        invalid = np.zeros(data.shape, bool)
    for c, value in enumerate(nodata):
        if value is not None and not (isinstance(value, float) and math.isnan(value)):
            invalid[c] |= raw[c] == value  # compare in the file dtype: exact, no float round-off
    return data, invalid


def to_decibels(values: np.ndarray, invalid: np.ndarray) -> None:
    """Linear backscatter (power) -> dB in place, ``10 * log10(value)``; values <= 0 (often the nodata of linear
    products) have no logarithm and become invalid. ``values`` is float32, ``invalid`` its bool mask."""
    with np.errstate(invalid="ignore"):
        invalid |= ~(values > 0)  # NaN compares False as well
    valid = ~invalid
    np.log10(values, out=values, where=valid)
    values[valid] *= 10.0


def read_text_label(path: str | Path) -> str:
    """The stripped content of a one-value text label file."""
    try:
        return Path(path).read_text().strip()
    except OSError as exc:
        raise DataError(f"cannot read label file {path}: {exc}") from exc


def write_raster(
    path: str | Path,
    array: np.ndarray,
    *,
    crs: str | None = None,
    transform: Any = None,
    nodata: float | None = None,
    compress: str | None = "deflate",
    descriptions: list[str] | None = None,
) -> Path:
    """Write a ``[C, H, W]`` (or ``[H, W]``) array as a GeoTIFF, atomically (temp file, then rename)."""
    path = Path(path)
    if array.ndim == 2:
        array = array[None]
    count, height, width = array.shape
    profile: dict[str, Any] = {
        "driver": "GTiff", "count": count, "height": height, "width": width, "dtype": array.dtype.name,
    }
    if crs is not None:
        profile["crs"] = crs
    if transform is not None:
        profile["transform"] = transform
    if nodata is not None:
        profile["nodata"] = nodata
    if compress:
        profile["compress"] = compress
    block = 256 if height >= 256 and width >= 256 else 16 * max(1, min(height, width) // 16)
    if height % 16 == 0 and width % 16 == 0 and block % 16 == 0:
        profile.update(tiled=True, blockxsize=block, blockysize=block)
    with atomic_path(path) as tmp, rasterio.open(tmp, "w", **profile) as dst:
        dst.write(array)
        for i, d in enumerate(descriptions or (), start=1):
            dst.set_band_description(i, d)
    return path


# Headers are read once per (path, size, mtime): `check()` and every `setup()` of a run reuse them.
_HEADER_CACHE: dict[tuple[str, int, int, bool], RasterHeader] = {}


def cached_header(path: str | Path, modality: str | None = None, *, verify_last_block: bool = False) -> RasterHeader:
    """:func:`read_header`, memoised on the file's path, size and modification time."""
    path = str(path)
    try:
        stat = os.stat(path)
    except OSError:
        return read_header(path, modality, verify_last_block=verify_last_block)  # raises DataNotFoundError
    key = (path, stat.st_size, stat.st_mtime_ns, verify_last_block)
    header = _HEADER_CACHE.get(key)
    if header is None:
        header = read_header(path, modality, verify_last_block=verify_last_block)
        _HEADER_CACHE[key] = header
    return header


def same_georeference(a: RasterHeader, b: RasterHeader) -> bool:
    """Same CRS and the same pixel grid, up to float round-off (a thousandth of a pixel)."""
    if a.crs != b.crs:
        return False
    if a.transform is None or b.transform is None:
        return a.transform is None and b.transform is None
    tolerance = 1e-3 * max(a.pixel_size, 1e-12)
    return all(abs(x - y) <= tolerance for x, y in zip(a.transform, b.transform, strict=True))
