"""Tiled inference: run a chip-sized model over an image of any size and stitch the outputs back together.

The image is cut into overlapping chips (``crop`` x ``crop``, ``stride`` apart; the last chip of each row and
column is snapped to the image edge). Every chip's output loses a border of ``delta`` pixels, where a
convolution or attention window sees padding instead of image, and the rest is blended with its neighbours
by a weight that falls off towards the chip's inner edges (a raised-cosine ramp over the overlap as in the
TerraMind notebooks, or a gaussian). At the image edges the image is mirrored (``padding="reflect"``) so that
edge pixels also get a chip centre's context.

The same chip geometry (:func:`plan_axis`, :func:`chip_weight`) drives the in-memory
:func:`tiled_inference` below and the streaming :func:`terramind_ft.inference.scene.predict_scene`, so that
both produce the same pixels.

Coordinates are always image coordinates: a chip starting at -8 reads 8 mirrored rows above the image.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch

from terramind_ft.errors import ConfigError, InferenceError, did_you_mean

BLEND_MODES = ("cosine", "gaussian", "none")
PADDING_MODES = ("reflect", "replicate", "circular", "constant", "none")
# MONAI's default: the gaussian's sigma is 1/8 of the chip side.
GAUSSIAN_SIGMA_SCALE = 0.125
# Weights never reach zero: a pixel covered by one chip's far ramp only still gets that chip's value.
MIN_WEIGHT = 1e-6


# ------------------------------------------------------------------------------------------------ parameters


@dataclass(frozen=True)
class TilingParameters:
    """Validated chip geometry and blending. Build it from a task's ``tiled_inference_parameters`` dict with
    :meth:`from_mapping`, which also accepts TerraTorch's keys (``blend_overlaps``, ``padding: false``)."""

    h_crop: int = 256
    w_crop: int = 256
    h_stride: int = 192
    w_stride: int = 192
    delta: int = 8
    blend: str = "cosine"  # one of BLEND_MODES
    padding: str = "reflect"  # one of PADDING_MODES
    average_patches: bool = True
    batch_size: int = 16

    def __post_init__(self) -> None:
        for name in ("h_crop", "w_crop", "h_stride", "w_stride", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"must be a positive integer, got {value!r}", key=f"tiled_inference.{name}")
        if not isinstance(self.delta, int) or self.delta < 0:
            raise ConfigError(f"must be an integer >= 0, got {self.delta!r}", key="tiled_inference.delta")
        for crop_name, stride_name in (("h_crop", "h_stride"), ("w_crop", "w_stride")):
            crop, stride = getattr(self, crop_name), getattr(self, stride_name)
            if stride > crop:
                raise ConfigError(
                    f"stride {stride} is larger than the crop {crop}: pixels between chips would get no "
                    f"prediction. Use a stride <= crop (typically 3/4 of it).", key=f"tiled_inference.{stride_name}"
                )
        if self.blend not in BLEND_MODES:
            raise ConfigError(f"unknown blend {self.blend!r}.{did_you_mean(self.blend, BLEND_MODES)} "
                              f"Valid: {', '.join(BLEND_MODES)}", key="tiled_inference.blend")
        if self.padding not in PADDING_MODES:
            raise ConfigError(f"unknown padding {self.padding!r}.{did_you_mean(self.padding, PADDING_MODES)} "
                              f"Valid: {', '.join(PADDING_MODES)}", key="tiled_inference.padding")

    @property
    def effective_delta(self) -> int:
        """``delta`` reduced so that the kept centres of neighbouring chips still touch (see :func:`plan_axis`)."""
        return min(self.delta, (self.h_crop - self.h_stride) // 2, (self.w_crop - self.w_stride) // 2)

    @classmethod
    def from_mapping(cls, params: Mapping[str, Any] | None = None, key: str = "tiled_inference_parameters",
                     **overrides: Any) -> TilingParameters:
        """Parameters from a config mapping; ``crop``/``stride`` set both axes, ``h_*``/``w_*`` one.

        Keys: crop, stride, h_crop, w_crop, h_stride, w_stride, delta, blend ("cosine" | "gaussian" | "none"),
        blend_overlaps (bool, TerraTorch), padding (mode, or false/None for none), average_patches, batch_size.
        ``verbose`` is accepted and ignored here (it belongs to the call).
        """
        values = dict(params or {})
        values.update(overrides)
        own = {f.name for f in fields(cls)}
        known = own | {"crop", "stride", "blend_overlaps", "verbose"}
        for name in values:
            if name not in known:
                raise ConfigError(f"unknown tiling parameter {name!r}.{did_you_mean(name, known)} "
                                  f"Valid: {', '.join(sorted(known))}", key=f"{key}.{name}")
        values.pop("verbose", None)
        crop = values.pop("crop", None)
        stride = values.pop("stride", None)
        for axis in ("h", "w"):
            if values.get(f"{axis}_crop") is None and crop is not None:
                values[f"{axis}_crop"] = crop
            if values.get(f"{axis}_stride") is None and stride is not None:
                values[f"{axis}_stride"] = stride
        blend_overlaps = values.pop("blend_overlaps", None)
        if blend_overlaps is not None and "blend" not in values:
            values["blend"] = "cosine" if blend_overlaps else "none"
        if values.get("blend") in (None, False):
            values["blend"] = "none"
        if values.get("padding") in (None, False, ""):
            values["padding"] = "none"
        values = {k: v for k, v in values.items() if v is not None}
        return cls(**values)


# -------------------------------------------------------------------------------------------- chip geometry


@dataclass(frozen=True)
class AxisChip:
    """One chip along one axis, in image coordinates.

    The chip reads ``[start, start + size)`` (indices outside ``[0, length)`` are padding) and writes its
    output ``[keep_lo, keep_hi)``; ``weight`` holds the blending weight of each written position.
    """

    start: int
    size: int
    keep_lo: int
    keep_hi: int
    weight: np.ndarray

    @property
    def offset(self) -> int:
        """Index of the first written position inside the chip."""
        return self.keep_lo - self.start


def _ramp(length: int) -> np.ndarray:
    """Rising raised-cosine ramp of ``length`` samples, strictly between 0 and 1 (TerraMind's blend ramp)."""
    i = np.arange(length, dtype=np.float64)
    return 0.5 - 0.5 * np.cos(np.pi * (i + 1) / (length + 1))


def _axis_weight(chip_size: int, kept: tuple[int, int], inner_lo: bool, inner_hi: bool, overlap: int,
                 blend: str) -> np.ndarray:
    """Weight of the kept chip positions ``[kept[0], kept[1])``; the ramps are on inner sides only.

    An image edge has no neighbour to blend with, so the weight stays 1 there (a pixel near the edge is then
    dominated by the chip that sees it furthest from that chip's inner border).
    """
    lo, hi = kept
    n = hi - lo
    weight = np.ones(n, np.float64)
    if blend == "cosine":
        ramp_len = max(0, min(overlap, n // 2))
        if ramp_len:
            if inner_lo:
                weight[:ramp_len] = _ramp(ramp_len)
            if inner_hi:
                weight[n - ramp_len:] = _ramp(ramp_len)[::-1]
    elif blend == "gaussian":
        centre = (chip_size - 1) / 2.0
        sigma = GAUSSIAN_SIGMA_SCALE * chip_size
        pos = np.arange(lo, hi, dtype=np.float64)
        gauss = np.exp(-0.5 * ((pos - centre) / sigma) ** 2)
        if inner_lo:
            weight = np.where(pos < centre, gauss, weight)
        if inner_hi:
            weight = np.where(pos > centre, gauss, weight)
    return np.maximum(weight, MIN_WEIGHT).astype(np.float32)


def plan_axis(length: int, crop: int, stride: int, delta: int, padded: bool, blend: str = "cosine") -> list[AxisChip]:
    """Chips along one axis of ``length`` pixels.

    ``padded``: the image is extended by ``delta`` mirrored pixels on both sides (more at the end when it is
    still shorter than ``crop``) and every chip discards ``delta`` pixels on both sides. Not ``padded``: chips
    stay inside the image (a chip shrinks to the image when the image is shorter than ``crop``) and discard
    ``delta`` only on sides facing another chip. Chips start every ``stride`` pixels; the last one is snapped
    to the end. Needs ``stride <= crop - 2 * delta`` so that kept parts of neighbours touch.
    """
    if length < 1:
        raise InferenceError(f"cannot tile an axis of length {length}")
    if stride > crop - 2 * delta:
        raise InferenceError(f"stride {stride} > crop {crop} - 2 * delta {delta}: some pixels would be covered by "
                             "no chip; lower the stride or delta")
    if padded:
        canvas_lo, canvas_len = -delta, max(length + 2 * delta, crop)
        size = crop
    else:
        canvas_lo, canvas_len = 0, length
        size = min(crop, length)
    starts = list(range(0, canvas_len - size + 1, stride))
    if starts[-1] != canvas_len - size:
        starts.append(canvas_len - size)
    overlap = min(crop // 2, crop - stride) - delta  # TerraMind's ramp length
    chips = []
    for s in starts:
        start = canvas_lo + s
        if padded:
            margin_lo = margin_hi = delta
        else:
            margin_lo = 0 if start == 0 else delta
            margin_hi = 0 if start + size == length else delta
        keep_lo = max(start + margin_lo, 0)
        keep_hi = min(start + size - margin_hi, length)
        inner_lo, inner_hi = keep_lo > 0, keep_hi < length
        weight = _axis_weight(size, (keep_lo - start, keep_hi - start), inner_lo, inner_hi, overlap, blend)
        chips.append(AxisChip(start=start, size=size, keep_lo=keep_lo, keep_hi=keep_hi, weight=weight))
    return chips


def chip_weight(row: AxisChip, col: AxisChip) -> np.ndarray:
    """2D blending weight ``[keep rows, keep cols]`` of the chip at (row, col)."""
    return np.outer(row.weight, col.weight).astype(np.float32)


def padded_indices(start: int, size: int, length: int, padding: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Source index of each of the ``size`` chip positions starting at ``start`` along an axis of ``length``.

    Positions outside ``[0, length)`` are mirrored (``reflect``, as ``torch.nn.functional.pad``: the edge
    pixel is not repeated, and mirroring repeats for pads longer than the image), clamped (``replicate``) or
    wrapped (``circular``). For ``constant``/``none`` they are clamped and the second value marks them (True
    = inside the image) so that the caller can zero them.
    """
    idx = np.arange(start, start + size, dtype=np.int64)
    inside = (idx >= 0) & (idx < length)
    if inside.all():
        return idx, None
    if padding == "reflect":
        if length == 1:
            return np.zeros_like(idx), None
        period = 2 * (length - 1)
        folded = np.abs(idx) % period
        return np.where(folded >= length, period - folded, folded), None
    if padding == "circular":
        return idx % length, None
    clamped = np.clip(idx, 0, length - 1)
    return clamped, (inside if padding in ("constant", "none") else None)


# --------------------------------------------------------------------------------------------- model calls


def output_tensor(output: Any, chip_shape: tuple[int, int], what: str = "model_forward") -> torch.Tensor:
    """The ``[b, C, h, w]`` tensor of a model output (a tensor, ``[b, h, w]``, or an object with ``.output``)."""
    if not isinstance(output, torch.Tensor) and hasattr(output, "output"):
        output = output.output
    if not isinstance(output, torch.Tensor):
        raise InferenceError(f"{what} returned {type(output).__name__}; tiled inference needs a tensor "
                             "[batch, channels, height, width] (or an object whose .output is one)")
    if output.ndim == 3:
        output = output[:, None]
    if output.ndim != 4 or tuple(output.shape[-2:]) != tuple(chip_shape):
        raise InferenceError(
            f"{what} returned shape {tuple(output.shape)} for chips of {chip_shape[0]}x{chip_shape[1]} pixels; "
            "tiled inference needs one output per pixel: [batch, channels, height, width] of the chip's size"
        )
    return output


def _as_dict(input: torch.Tensor | Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], bool]:
    if isinstance(input, torch.Tensor):
        return {"": input}, False
    if not isinstance(input, Mapping) or not input:
        raise InferenceError(f"input must be a tensor [B, C, H, W] or a non-empty dict of them, got "
                             f"{type(input).__name__}")
    tensors = dict(input)
    for name, t in tensors.items():
        if not isinstance(t, torch.Tensor):
            raise InferenceError(f"input[{name!r}] is {type(t).__name__}, expected a tensor [B, C, H, W]")
    return tensors, True


def _check_shapes(tensors: dict[str, torch.Tensor]) -> tuple[int, int, int]:
    shapes = {name or "input": tuple(t.shape) for name, t in tensors.items()}
    for name, shape in shapes.items():
        if len(shape) < 3:
            raise InferenceError(f"{name} has shape {shape}; expected [B, C, H, W] (or [B, ..., H, W])")
    sizes = {shape[-2:] for shape in shapes.values()}
    batches = {shape[0] for shape in shapes.values()}
    if len(sizes) > 1 or len(batches) > 1:
        raise InferenceError(
            "all modalities must share batch size and height x width for tiled inference, got "
            + ", ".join(f"{n}: {s}" for n, s in shapes.items())
            + ". Resample them to one grid first (predict_scene does this for files)."
        )
    (height, width), = sizes
    return next(iter(batches)), height, width


def _gather(t: torch.Tensor, rows: tuple[np.ndarray, np.ndarray | None], cols: tuple[np.ndarray, np.ndarray | None],
            batch_index: int) -> torch.Tensor:
    row_idx = torch.as_tensor(rows[0], device=t.device)
    col_idx = torch.as_tensor(cols[0], device=t.device)
    chip = t[batch_index].index_select(-2, row_idx).index_select(-1, col_idx)
    if rows[1] is not None or cols[1] is not None:
        valid_r = torch.as_tensor(rows[1] if rows[1] is not None else np.ones(len(rows[0]), bool), device=t.device)
        valid_c = torch.as_tensor(cols[1] if cols[1] is not None else np.ones(len(cols[0]), bool), device=t.device)
        chip = chip * (valid_r[:, None] & valid_c[None, :]).to(chip.dtype)
    return chip


# ------------------------------------------------------------------------------------------------ in memory


def tiled_inference(
    model_forward: Callable[..., Any],
    input: torch.Tensor | Mapping[str, torch.Tensor],
    crop: int = 256,
    stride: int = 192,
    batch_size: int = 16,
    verbose: bool = False,
    delta: int = 8,
    h_crop: int | None = None,
    w_crop: int | None = None,
    h_stride: int | None = None,
    w_stride: int | None = None,
    blend: str | None = "cosine",
    padding: str | bool | None = "reflect",
    average_patches: bool = True,
    device: torch.device | str | None = None,
    blend_overlaps: bool | None = None,
    **kwargs: Any,
) -> torch.Tensor:
    """Run ``model_forward`` on overlapping chips of ``input`` and return the stitched ``[B, C, H, W]`` output.

    ``input``: a tensor ``[B, C, H, W]`` (or ``[B, C, T, H, W]``) or a dict ``{modality: tensor}`` sharing
    B, H and W (each chip is then a dict too). Any H x W works, including sizes smaller than a chip.
    ``crop``/``stride`` (or per axis ``h_crop``, ``w_crop``, ``h_stride``, ``w_stride``): chip size and
    spacing. ``delta``: border discarded from every chip output (reduced with a warning when the overlap is
    too small for it). ``blend``: ``"cosine"`` (raised-cosine ramp over the overlap), ``"gaussian"`` or
    ``None``; ``blend_overlaps=False`` is TerraTorch's spelling of ``blend=None``. ``padding``: how the image
    is extended at its edges (``"reflect"``, ``"replicate"``, ``"circular"``, ``"constant"`` zeros, or
    ``None``: chips stay inside the image). ``average_patches=False``: each pixel takes the last chip's value
    instead of the weighted mean. ``batch_size`` chips go through ``model_forward(chips, **kwargs)`` at once,
    on ``device`` (default: the input's device), without gradients; outputs are accumulated on the CPU.

    Returns float32 on the input's device. Raises :class:`InferenceError` if any pixel got no prediction.
    """
    params = TilingParameters.from_mapping(
        dict(crop=crop, stride=stride, h_crop=h_crop, w_crop=w_crop, h_stride=h_stride, w_stride=w_stride,
             delta=delta, blend=blend, blend_overlaps=blend_overlaps, padding=padding,
             average_patches=average_patches, batch_size=batch_size),
        key="tiled_inference",
    )
    return run_tiled(model_forward, input, params, verbose=verbose, device=device, **kwargs)


def run_tiled(model_forward: Callable[..., Any], input: torch.Tensor | Mapping[str, torch.Tensor],
              params: TilingParameters, *, verbose: bool = False, device: torch.device | str | None = None,
              **kwargs: Any) -> torch.Tensor:
    """:func:`tiled_inference` with validated :class:`TilingParameters`."""
    tensors, is_dict = _as_dict(input)
    batch, height, width = _check_shapes(tensors)
    input_device = next(iter(tensors.values())).device
    device = torch.device(device) if device is not None else input_device
    delta = params.effective_delta
    if delta < params.delta:
        warnings.warn(f"tiled inference: delta {params.delta} is more than half the overlap "
                      f"(crop - stride); using delta={delta} so that every pixel stays covered", stacklevel=3)
    padded = params.padding != "none"
    rows = plan_axis(height, params.h_crop, params.h_stride, delta, padded, params.blend)
    cols = plan_axis(width, params.w_crop, params.w_stride, delta, padded, params.blend)
    chips = [(b, r, c) for b in range(batch) for r in rows for c in cols]
    num_batches = math.ceil(len(chips) / params.batch_size)

    preds: torch.Tensor | None = None
    weight_sum = torch.zeros(height, width, dtype=torch.float32)
    iterator: Iterator[int] = iter(range(num_batches))
    if verbose:
        from tqdm.auto import tqdm

        iterator = iter(tqdm(range(num_batches), desc="tiled inference", unit="batch"))
    with torch.no_grad():
        for i in iterator:
            group = chips[i * params.batch_size:(i + 1) * params.batch_size]
            chip_inputs = {}
            for name, t in tensors.items():
                chip_inputs[name] = torch.stack([
                    _gather(t, padded_indices(r.start, r.size, height, params.padding),
                            padded_indices(c.start, c.size, width, params.padding), b)
                    for b, r, c in group
                ]).to(device)
            model_input = chip_inputs if is_dict else chip_inputs[""]
            chip_shape = (group[0][1].size, group[0][2].size)
            out = output_tensor(model_forward(model_input, **kwargs), chip_shape).detach().float().cpu()
            if preds is None:
                preds = torch.zeros(batch, out.shape[1], height, width, dtype=torch.float32)
            for k, (b, r, c) in enumerate(group):
                # Chips of one batch may have different sizes only when an axis is shorter than the crop, and
                # then every chip along that axis has the same (shrunk) size, so one chip_shape fits all.
                kept = out[k, :, r.offset:r.offset + r.keep_hi - r.keep_lo, c.offset:c.offset + c.keep_hi - c.keep_lo]
                region = (slice(r.keep_lo, r.keep_hi), slice(c.keep_lo, c.keep_hi))
                if params.average_patches:
                    w = torch.from_numpy(chip_weight(r, c))
                    preds[b, :, region[0], region[1]] += kept * w
                    if b == 0:
                        weight_sum[region] += w
                else:
                    preds[b, :, region[0], region[1]] = kept
                    if b == 0:
                        weight_sum[region] = 1.0
    assert preds is not None
    uncovered = int((weight_sum <= 0).sum())
    if uncovered:
        raise InferenceError(f"tiled inference left {uncovered} of {height * width} pixels without a prediction "
                             f"(crop {params.h_crop}x{params.w_crop}, stride {params.h_stride}x{params.w_stride}, "
                             f"delta {delta}); this is a bug, please report it with these numbers")
    if params.average_patches:
        preds /= weight_sum
    return preds.to(input_device)
