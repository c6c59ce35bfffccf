"""Figures of samples: RGB of one modality (de-standardised, percentile stretch), the other modalities in
greyscale, the mask with a class legend, and an optional prediction. Used by ``datamodule.plot`` and the
tasks' validation previews; never touches files except through :func:`save_figure`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from terramind_ft.io import atomic_path

# Stretch limits of image panels (percentiles of the valid pixels).
STRETCH_PERCENTILES = (2.0, 98.0)
IGNORE_COLOUR = (0.0, 0.0, 0.0)


def _item(value: Any, index: int, item_ndim: int) -> np.ndarray:
    """Item ``index`` of a batched array (or the array itself when it is already one item), as numpy."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().float().numpy() if value.dtype.is_floating_point else value.detach().cpu().numpy()
    value = np.asarray(value)
    return value[index] if value.ndim > item_ndim else value


def _stretch(image: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """Per-channel percentile stretch of ``[C, H, W]`` to [0, 1]; channels-last output."""
    out = np.zeros(image.shape[1:] + (image.shape[0],), np.float32)
    for c, band in enumerate(image):
        values = band[np.isfinite(band) & (valid if valid is not None else True)]
        if values.size == 0:
            continue
        lo, hi = np.percentile(values, STRETCH_PERCENTILES)
        out[..., c] = np.clip((np.nan_to_num(band, nan=lo) - lo) / max(hi - lo, 1e-6), 0, 1)
    return out


def class_colours(num_classes: int) -> np.ndarray:
    """A fixed colour per class (tab10/tab20), ``[num_classes, 3]``."""
    import matplotlib

    cmap = matplotlib.colormaps["tab10" if num_classes <= 10 else "tab20"]
    return np.array([cmap(i % cmap.N)[:3] for i in range(num_classes)], np.float32)


def _colour_mask(mask: np.ndarray, colours: np.ndarray, ignore_index: int | None) -> np.ndarray:
    rgb = np.zeros(mask.shape + (3,), np.float32)
    for k, colour in enumerate(colours):
        rgb[mask == k] = colour
    if ignore_index is not None:
        rgb[mask == ignore_index] = IGNORE_COLOUR
    return rgb


def plot_sample(
    sample: Mapping[str, Any],
    prediction: Any = None,
    *,
    modalities: Sequence[str],
    means: Mapping[str, Sequence[float]],
    stds: Mapping[str, Sequence[float]],
    rgb_modality: str,
    rgb_indices: Sequence[int],
    class_names: Sequence[str] | None = None,
    ignore_index: int | None = -1,
    index: int = 0,
    title: str | None = None,
):
    """A matplotlib Figure of one sample (or item ``index`` of a batch).

    ``prediction``: class map ``[H, W]`` (or ``[B, H, W]``), logits ``[C, H, W]`` / ``[B, C, H, W]`` (argmax
    is taken), or for classification a class index / logits vector.
    """
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    images = sample["image"]
    nodata = _item(sample["nodata"], index, 2).astype(bool) if "nodata" in sample else None
    panels: list[tuple[str, np.ndarray, dict]] = []
    for m in modalities:
        if m not in images:
            continue
        x = _item(images[m], index, 3).astype(np.float32)
        dates = ""
        if x.ndim == 4:  # a time series [C, T, H, W]: show its last date
            dates = f", date {x.shape[1]} of {x.shape[1]}"
            x = x[:, -1]
        mean = np.asarray(means[m], np.float32)[:, None, None]
        std = np.asarray(stds[m], np.float32)[:, None, None]
        x = x * std + mean  # back to file units, so that the stretch is the usual one
        valid = ~nodata if nodata is not None and nodata.shape == x.shape[1:] else None
        if m == rgb_modality and len(rgb_indices) == 3:
            panels.append((f"{m} (RGB {list(rgb_indices)}{dates})", _stretch(x[list(rgb_indices)], valid), {}))
        else:
            band = rgb_indices[0] if m == rgb_modality else 0
            panels.append((f"{m} (band {band}{dates})", _stretch(x[[band]], valid)[..., 0], {"cmap": "gray"}))

    legend_classes: list[str] = []
    label_text = None
    n_classes = len(class_names) if class_names else 0
    pred = None
    if prediction is not None:
        pred = prediction.detach().cpu() if isinstance(prediction, torch.Tensor) else torch.as_tensor(prediction)
    if "mask" in sample:
        mask = _item(sample["mask"], index, 2)
        if mask.dtype.kind in "iu":
            n_classes = max(n_classes, int(mask.max()) + 1 if mask.size else 0)
            if pred is not None and pred.dtype.is_floating_point and pred.ndim >= 3:
                n_classes = max(n_classes, pred.shape[-3])
            colours = class_colours(max(n_classes, 1))
            panels.append(("mask", _colour_mask(mask, colours, ignore_index), {"interpolation": "nearest"}))
            if pred is not None:
                p = pred
                if p.dtype.is_floating_point:  # logits / probabilities
                    p = p.argmax(-3) if p.ndim >= 3 else p
                p = _item(p, index, 2)
                panels.append(("prediction", _colour_mask(p, colours, None), {"interpolation": "nearest"}))
            legend_classes = [class_names[k] if class_names and k < len(class_names) else str(k)
                              for k in range(n_classes)]
        else:
            panels.append(("target", mask.astype(np.float32), {"cmap": "viridis"}))
            if pred is not None:
                panels.append(("prediction", _item(pred.float(), index, 2), {"cmap": "viridis"}))
    elif "label" in sample:
        label = int(_item(sample["label"], index, 0))
        name = class_names[label] if class_names and 0 <= label < len(class_names) else str(label)
        label_text = f"label: {name}"
        if pred is not None:
            p = pred.argmax(-1) if pred.dtype.is_floating_point and pred.ndim >= 1 else pred
            p = int(_item(p, index, 0))
            label_text += f" | prediction: {class_names[p] if class_names and 0 <= p < len(class_names) else p}"

    fig = Figure(figsize=(3.2 * len(panels), 3.6 if legend_classes else 3.2), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (name, array, kwargs) in zip(axes, panels, strict=True):
        ax.imshow(array, **kwargs)
        ax.set_title(name, fontsize=9)
        ax.set_axis_off()
    if legend_classes:
        colours = class_colours(len(legend_classes))
        handles = [Patch(color=colours[k], label=c) for k, c in enumerate(legend_classes)]
        if ignore_index is not None:
            handles.append(Patch(color=IGNORE_COLOUR, label=f"ignored ({ignore_index})"))
        fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 6), fontsize=8)
    heading = " - ".join(t for t in (title, label_text) if t)
    if heading:
        fig.suptitle(heading, fontsize=10)
    return fig


def save_figure(fig, path: str | os.PathLike, dpi: int = 100) -> str:
    """Save ``fig`` as PNG at ``path`` via a temp file + rename, so a reader never sees half a file."""
    path = Path(path)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    return str(path)
