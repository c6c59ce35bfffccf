"""Prediction GeoTIFFs and the Lightning callback that writes them during ``terramind-ft predict``.

Every output copies CRS and transform from its input raster and must have exactly the input's pixel grid
(a prediction of another shape is refused, never written with a wrong georeference). Outputs:

* ``<stem>_pred.tif``: uint8 class map, nodata 255 where the input is nodata, a colour table, the class
  names in the band description and in the ``CLASS_NAMES`` tag (JSON list); ``out_dtype`` another type;
* ``<stem>_probabilities.tif`` / ``<stem>_logits.tif``: float32, one band per class named after it, NaN
  nodata (with ``output_on_inference: [prediction, probabilities]``);
* regression: ``<stem>_pred.tif`` float32 values, NaN nodata; classification: one ``predictions.csv``.

Files are written to a temporary name and renamed when complete; every written file is logged, and
``predictions.json`` (input -> outputs) is written at the end of the run.
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import torch
from lightning.pytorch.callbacks import BasePredictionWriter

from terramind_ft.errors import InferenceError
from terramind_ft.inference.geotiff import (
    COLORMAP_DTYPES, SUFFIX, class_colormap, class_map_encoding, float_output_dtype, weights_tags,
)
from terramind_ft.io import atomic_path, atomic_write_json

log = logging.getLogger(__name__)

PREDICTIONS_DIR = "predictions"


_NOT_GEOREFERENCED: set[str] = set()


def warn_not_georeferenced(reference: str | Path, output: str | Path) -> None:
    """Say once per input that its outputs carry no CRS, because the input has none."""
    if str(reference) not in _NOT_GEOREFERENCED:
        _NOT_GEOREFERENCED.add(str(reference))
        log.warning("warning: %s has no CRS, so %s is written without one (pixel grid only, not georeferenced)",
                    reference, output)


def _write_geotiff(path: Path, profile: dict[str, Any], array: np.ndarray, *, descriptions: Sequence[str] = (),
                   colormap: dict | None = None, tags: dict[str, str] | None = None) -> Path:
    with atomic_path(path) as tmp, rasterio.open(tmp, "w", **profile) as dst:
        dst.write(array)
        for i, d in enumerate(descriptions, start=1):
            dst.set_band_description(i, d)
        if colormap:
            dst.write_colormap(1, colormap)
        if tags:
            dst.update_tags(**tags)
    return path


def write_prediction(path: str | Path, array: np.ndarray | torch.Tensor, reference: str | Path, *, kind: str,
                     class_names: Sequence[str] | None = None, nodata_mask: np.ndarray | None = None,
                     tags: dict[str, str] | None = None, out_dtype: str | None = None) -> Path:
    """Write ``array`` (``[H, W]`` class map or values, ``[C, H, W]`` probabilities/logits) on ``reference``'s
    grid. ``kind``: class_map | probabilities | logits | values. ``nodata_mask`` (``[H, W]`` bool) marks
    pixels written as nodata; ``tags`` are added to the file's metadata (e.g. :data:`WEIGHTS_TAG`);
    ``out_dtype`` is the type of a class map or of values (default uint8 / float32; probabilities and logits
    stay float32)."""
    if isinstance(array, torch.Tensor):
        array = array.detach().cpu().numpy()
    array = np.asarray(array)
    bands = array[None] if array.ndim == 2 else array
    with rasterio.open(reference) as src:
        crs, transform, height, width = src.crs, src.transform, src.height, src.width
    if crs is None:
        warn_not_georeferenced(reference, path)
    if bands.shape[-2:] != (height, width):
        raise InferenceError(f"prediction of shape {bands.shape[-2]}x{bands.shape[-1]} does not match the grid of its "
                             f"input {reference} ({height}x{width}); refusing to write {path} with a wrong "
                             "georeference (remove crops/resizes from the predict transforms)")
    mask = None if nodata_mask is None else np.asarray(nodata_mask, dtype=bool)
    profile: dict[str, Any] = {"driver": "GTiff", "count": bands.shape[0], "height": height, "width": width,
                               "crs": crs, "transform": transform, "compress": "deflate"}
    if height % 16 == 0 and width % 16 == 0 and min(height, width) >= 16:
        block = 256 if min(height, width) >= 256 else 16
        profile.update(tiled=True, blockxsize=block, blockysize=block)
    names = [str(c) for c in (class_names or [])]
    if kind == "class_map":
        n = int(bands.max()) + 1 if bands.size else 0
        dtype, nodata = class_map_encoding(out_dtype, max(n, len(names)))
        out = bands.astype(dtype)
        if mask is not None:
            out[:, mask] = nodata
        profile.update(dtype=dtype, nodata=nodata)
        legend = ", ".join(f"{i}={c}" for i, c in enumerate(names)) if names else "class index"
        return _write_geotiff(Path(path), profile, out, descriptions=[f"class ({legend})"],
                              colormap=class_colormap(max(n, len(names)), nodata) if dtype in COLORMAP_DTYPES
                              else None,
                              tags={**({"CLASS_NAMES": json.dumps(names)} if names else {}), **(tags or {})})
    if kind not in ("probabilities", "logits", "values"):
        raise ValueError(f"unknown prediction kind {kind!r}")
    dtype = float_output_dtype(kind, out_dtype)
    out = bands.astype(dtype)
    if mask is not None:
        out[:, mask] = np.nan
    profile.update(dtype=dtype, nodata=float("nan"))
    descriptions = names if kind != "values" and len(names) == out.shape[0] else [f"{kind} {i}" for i in
                                                                                  range(out.shape[0])]
    return _write_geotiff(Path(path), profile, out, descriptions=descriptions, tags=tags)


class PredictionWriter(BasePredictionWriter):
    """Writes what a task's ``predict_step`` returns, one GeoTIFF per input (see the module docstring).

    Args:
        output_dir: where files go; default ``<trainer.default_root_dir>/predictions`` (the CLI's
            ``--predict_output_dir`` sets it).
        reference_modality: the modality whose input file supplies the grid and georeference (default:
            the first one of the batch).
        out_dtype: the type of class maps / regression values (default uint8 with nodata 255 / float32; the
            CLI's ``--out_dtype``, TerraTorch's option: signed and float class maps get nodata -1).
    """

    def __init__(self, output_dir: str | None = None, reference_modality: str | None = None,
                 out_dtype: str | None = None):
        super().__init__(write_interval="batch")
        self.output_dir = output_dir
        self.reference_modality = reference_modality
        self.out_dtype = out_dtype
        self.written: dict[str, list[str]] = {}
        self._rows: list[list[Any]] = []
        self._header: list[str] = []

    def resolved_dir(self, trainer: Any) -> Path:
        return Path(self.output_dir or Path(trainer.default_root_dir) / PREDICTIONS_DIR)

    def on_predict_start(self, trainer: Any, pl_module: Any) -> None:
        self.written, self._rows = {}, []

    def _references(self, prediction: dict[str, Any]) -> list[str]:
        files = prediction.get("filename") or {}
        if not files:
            raise InferenceError("the predict batches carry no 'filename', so outputs cannot be georeferenced")
        modality = self.reference_modality or next(iter(files))
        if modality not in files:
            raise InferenceError(f"reference_modality {modality!r} is not in the batch ({', '.join(files)})")
        return [str(f) for f in files[modality]]

    def _claim(self, path: Path, source: str) -> None:
        for src, outs in self.written.items():
            if str(path) in outs and src != source:
                raise InferenceError(f"inputs {src} and {source} would both be written to {path}; give inputs unique "
                                     "file names")

    def write_on_batch_end(self, trainer: Any, pl_module: Any, prediction: dict[str, Any], batch_indices: Any,
                           batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        out_dir = self.resolved_dir(trainer)
        if "written" in prediction:  # streamed scenes (terramind_ft.inference.scene): already on disk
            for ref, paths in prediction["written"].items():
                for path in paths:
                    self._claim(Path(path), ref)
                self.written.setdefault(ref, []).extend(paths)
            return
        references = self._references(prediction)
        class_names = prediction.get("class_names")
        if "label" in prediction:  # classification: rows of a table, written at the end
            probs = prediction["probabilities"].cpu().numpy()
            self._header = ["file", "class", "class_name"] + [f"p_{c}" for c in class_names]
            for ref, label, p in zip(references, prediction["label"].tolist(), probs, strict=True):
                self._rows.append([ref, label, class_names[label], *[f"{v:.6f}" for v in p]])
            return
        nodata = prediction.get("nodata")
        for i, ref in enumerate(references):
            mask = None if nodata is None else nodata[i].cpu().numpy()
            stem = Path(ref).stem
            for kind in ("class_map", "probabilities", "logits", "values"):
                if kind not in prediction:
                    continue
                path = out_dir / f"{stem}{SUFFIX[kind]}.tif"
                self._claim(path, ref)
                write_prediction(path, prediction[kind][i], ref, kind=kind, class_names=class_names, nodata_mask=mask,
                                 tags=weights_tags(getattr(pl_module, "weights_provenance", None)),
                                 out_dtype=self.out_dtype)
                self.written.setdefault(ref, []).append(str(path))
                log.info("wrote %s", path)

    def on_predict_end(self, trainer: Any, pl_module: Any) -> None:
        # Under DDP every rank wrote the GeoTIFFs of its own samples; rank 0 writes the one manifest/table.
        self.written, self._rows = _gather_on_rank_zero(trainer, self.written, self._rows)
        if not trainer.is_global_zero:
            return
        out_dir = self.resolved_dir(trainer)
        if self._rows:
            path = out_dir / "predictions.csv"
            with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
                writer = csv.writer(f)
                writer.writerow(self._header)
                writer.writerows(self._rows)
            self.written.update({row[0]: [str(path)] for row in self._rows})
            log.info("wrote %s (%d rows)", path, len(self._rows))
        if not self.written:
            log.warning("predict wrote no files: the predict split is empty (check data.init_args.predict_data_root"
                        " and predict_split)")
            return
        manifest = atomic_write_json(out_dir / "predictions.json", self.written, indent=1)
        n = sum(len(v) for v in self.written.values())
        log.info("predict: %d files for %d input%s in %s (list: %s)", n, len(self.written),
                 "" if len(self.written) == 1 else "s", out_dir, manifest)


def _gather_on_rank_zero(trainer: Any, written: dict[str, list[str]], rows: list[list[Any]]
                         ) -> tuple[dict[str, list[str]], list[list[Any]]]:
    """Merge every rank's manifest and table rows (a DistributedSampler may give a sample to two ranks)."""
    if trainer.world_size <= 1 or not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return written, rows
    gathered: list[Any] = [None] * trainer.world_size
    torch.distributed.all_gather_object(gathered, (written, rows))
    merged: dict[str, list[str]] = {}
    merged_rows: dict[str, list[Any]] = {}
    for rank_written, rank_rows in gathered:
        for ref, paths in rank_written.items():
            merged[ref] = sorted(set(merged.get(ref, [])) | set(paths))
        for row in rank_rows:
            merged_rows[row[0]] = row
    return merged, list(merged_rows.values())
