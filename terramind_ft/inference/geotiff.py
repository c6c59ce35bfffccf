"""Conventions every GeoTIFF output shares (predict, streamed scenes, generate): one home for them.

* class maps are uint8 with nodata :data:`CLASS_NODATA` and a colour table (:func:`class_colormap`);
* output names are ``<input stem><SUFFIX[kind]>.tif``;
* :data:`WEIGHTS_TAG` says which weights made the output (``checkpoint <path>``, ``pretrained``, or
  ``untrained`` / ``random``: such an output looks real and is not).
"""

from __future__ import annotations

import colorsys

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
