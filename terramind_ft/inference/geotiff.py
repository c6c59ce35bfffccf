"""Conventions every GeoTIFF output shares (predict, streamed scenes, generate): one home for them.

* class maps are uint8 with nodata :data:`CLASS_NODATA` and a colour table (:func:`class_colormap`); another
  type on request (``--out_dtype``, TerraTorch's option: :func:`class_map_encoding`);
* output names are ``<input stem><SUFFIX[kind]>.tif``;
* :data:`WEIGHTS_TAG` says which weights made the output (``checkpoint <path>``, ``pretrained``, or
  ``untrained`` / ``random``: such an output looks real and is not).
"""

from __future__ import annotations

import colorsys

import numpy as np

from terramind_ft.errors import ConfigError, InferenceError

CLASS_NODATA = 255  # uint8 class maps hold at most 255 classes (0..254)
SUFFIX = {"class_map": "_pred", "probabilities": "_probabilities", "logits": "_logits", "values": "_pred"}
WEIGHTS_TAG = "TERRAMIND_FT_WEIGHTS"
# Qualitative palette (matplotlib tab10) for the first ten classes; more classes get evenly spaced hues.
TAB10 = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
         (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207))


def class_colormap(num_classes: int, nodata: int | None = CLASS_NODATA) -> dict[int, tuple[int, int, int, int]]:
    """RGBA colour table for a class map: tab10 for the first ten classes, evenly spaced hues beyond, and a
    transparent entry for ``nodata``."""
    colours: dict[int, tuple[int, int, int, int]] = {}
    for k in range(num_classes):
        if k < len(TAB10):
            colours[k] = (*TAB10[k], 255)
        else:
            r, g, b = colorsys.hsv_to_rgb(((k - len(TAB10)) * 0.618034) % 1.0, 0.65, 0.9)
            colours[k] = (int(r * 255), int(g * 255), int(b * 255), 255)
    if nodata is not None:
        colours[nodata] = (0, 0, 0, 0)
    return colours


def weights_tags(provenance: str | None) -> dict[str, str]:
    """The tag dict for an output made by weights of ``provenance`` (empty when unknown)."""
    return {WEIGHTS_TAG: provenance} if provenance else {}


# --out_dtype: the GeoTIFF types a class map or regression values may be written as (TerraTorch's option).
OUT_DTYPES = ("uint8", "uint16", "int16", "int32", "float32", "float64")
FLOAT_OUT_DTYPES = ("float32", "float64")
COLORMAP_DTYPES = ("uint8", "uint16")  # GDAL writes colour tables for Byte and UInt16 bands only


def check_out_dtype(out_dtype: str | None, task: str | None) -> None:
    """Refuse an ``--out_dtype`` that is no GeoTIFF type here, or that would truncate regression values."""
    if out_dtype is None:
        return
    if out_dtype not in OUT_DTYPES:
        raise ConfigError(f"out_dtype must be one of {', '.join(OUT_DTYPES)}, got {out_dtype!r}", key="out_dtype")
    if task == "regression" and out_dtype not in FLOAT_OUT_DTYPES:
        raise ConfigError(f"out_dtype {out_dtype} would truncate regression values; use float32 (the default) or "
                          "float64", key="out_dtype")


def class_map_encoding(out_dtype: str | None, num_classes: int) -> tuple[str, int]:
    """(dtype, nodata) of a class map of ``num_classes``: uint8 with nodata 255 by default; with ``out_dtype``,
    that type with TerraTorch's nodata -1 (signed and float types) or the type's largest value (unsigned)."""
    dtype = out_dtype or "uint8"
    if dtype in FLOAT_OUT_DTYPES or np.issubdtype(np.dtype(dtype), np.signedinteger):
        nodata, largest = -1, (np.iinfo(dtype).max if dtype not in FLOAT_OUT_DTYPES else 2 ** 24)
    else:
        nodata = largest = int(np.iinfo(dtype).max)
    if num_classes > largest:
        raise InferenceError(f"{num_classes} classes do not fit a {dtype} class map (nodata {nodata}); choose a "
                             "wider --out_dtype")
    return dtype, nodata


def float_output_dtype(kind: str, out_dtype: str | None) -> str:
    """The type of a float output: regression values take a float ``out_dtype``; probabilities and logits are
    always float32 (an integer type would truncate them)."""
    return out_dtype if kind == "values" and out_dtype in FLOAT_OUT_DTYPES else "float32"
