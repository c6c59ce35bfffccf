"""``terramind-ft generate``: generate modalities from GeoTIFFs and write georeferenced GeoTIFFs + PNG previews.

Examples::

    terramind-ft generate --inputs S2L2A=scene.tif --outputs S1GRD DEM LULC --timesteps 10 --output-dir out/
    terramind-ft generate --inputs S2L2A=s2/ S1GRD=s1/ --outputs LULC     # folders: files matched by name
    terramind-ft generate --inputs terramesh/ --modalities S2L2A --outputs NDVI   # modality sub-folders
    terramind-ft generate --coords -3.70,40.42 8.54,47.37 --outputs S2L2A LULC   # images from locations

For every input scene (one file per input modality, same pixel grid) it writes ``<stem>_<OUTPUT>.tif`` per
output -- float32 in physical units with band names (S2L2A reflectance x 10000, S1 dB, DEM metres, NDVI), or for
LULC a uint8 class map with a colour table (``--lulc-probabilities`` adds the 10 class probabilities) -- with
the CRS and transform of the input, NaN / 255 where any input is nodata, written to a temporary file and
renamed when complete; and ``<stem>_preview.png``: the input in RGB beside every generated modality (colour
maps for LULC, DEM and NDVI).

From locations (``--coords LON,LAT ...``) it generates a ``--size`` px scene per location, written around it in its
UTM zone at ``--resolution`` m (default 224 px at 10 m, the pretraining chips): ``lat<lat>_lon<lon>_<OUTPUT>.tif``,
tagged as generated, not observed. The coords tokenizer comes from the hub or ``--coords-tokenizer FILE``.

Inputs are standardised with the v1 pretraining statistics of :mod:`terramind_ft.modalities`. A scene that
fits one ``--crop`` chip is generated in one pass; larger scenes are tiled (overlapping chips, cosine-blended,
:func:`terramind_ft.inference.tiling.tiled_inference`); scenes above ``--stream-above`` pixels (or with
``--stream``) are streamed from disk strip by strip (:func:`terramind_ft.inference.scene.predict_scene`), so
memory does not grow with the scene height. ``--seed`` makes a run reproducible (default 0).

Weights: ``--pretrained`` (default) downloads ``ibm-esa-geospatial/TerraMind-1.0-<size>`` and the output
tokenizers through the Hugging Face cache; ``--ckpt-path`` / ``--tokenizer-ckpt MOD=FILE`` use local files.
Random weights (``--no-pretrained``) produce meaningless images and need ``--allow-random-weights``.
Exit codes are those of every terramind-ft command (``terramind-ft --help``): 0 done, 2 a config error, 3 a data
error, 4 a checkpoint error, 130/143 stopped by SIGINT/SIGTERM (partial outputs removed). Outputs made from random
weights carry the tag ``TERRAMIND_FT_WEIGHTS=random``.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
import torch

from terramind_ft.errors import ConfigError, DataError, DataNotFoundError, RasterMismatchError
from terramind_ft.inference.geotiff import CLASS_NODATA, WEIGHTS_TAG, class_colormap
from terramind_ft.io import atomic_path
from terramind_ft.modalities import LULC_CLASSES, MODALITIES, TOKEN_MODALITIES, Modality, find_modality, \
    resolve_output

log = logging.getLogger(__name__)

RASTER_SUFFIXES = (".tif", ".tiff")
DEFAULT_MODEL = "terramind_v1_base_generate"
DEFAULT_STREAM_ABOVE = 4096 * 4096  # pixels; larger scenes are streamed from disk
PREVIEW_MAX_SIDE = 1024
STRIP_ROWS = 512  # rows copied at once when splitting a streamed result
NDVI_RANGE = (-0.2, 0.9)


# ------------------------------------------------------------------------------------------------- arguments


def command_parser(prog: str, description: str, doc: str) -> argparse.ArgumentParser:
    """The parser of a scene command (generate, geolocate): no abbreviated options, and the second and third
    paragraphs of its module docstring ``doc`` as the epilog."""
    return argparse.ArgumentParser(prog=prog, allow_abbrev=False, description=description,
                                   epilog="\n\n".join(doc.split("\n\n")[1:3]),
                                   formatter_class=argparse.RawDescriptionHelpFormatter)


def build_parser() -> argparse.ArgumentParser:
    p = command_parser("terramind-ft generate", "Generate modalities from GeoTIFFs; write georeferenced GeoTIFFs "
                       "and PNG previews.", __doc__)
    add_scene_arguments(p, required=False)
    p.add_argument("--coords", nargs="+", action="extend", metavar="LON,LAT",
                   help="generate from locations instead of --inputs: a --size px scene centred on each, in its UTM "
                        "zone at --resolution m")
    p.add_argument("--size", type=int, default=224, help="with --coords: output size in pixels (default 224)")
    p.add_argument("--resolution", type=float, default=10.0, help="with --coords: metres per pixel (default 10)")
    p.add_argument("--coords-tokenizer", metavar="FILE",
                   help="with --coords: a local coords tokenizer (the hub's config.json) instead of the download")
    p.add_argument("--outputs", nargs="+", required=True, metavar="MOD",
                   help=f"modalities to generate: {', '.join(TOKEN_MODALITIES)}")
    add_weight_arguments(p, DEFAULT_MODEL)
    p.add_argument("--tokenizer-ckpt", nargs="+", default=[], metavar="MOD=FILE",
                   help="local tokenizer checkpoints (TerraMind_Tokenizer_<MOD>.pt)")
    p.add_argument("--allow-random-weights", action="store_true",
                   help="accept random weights (tests, smoke runs); the images are then meaningless")
    p.add_argument("--timesteps", type=int, default=10, help="diffusion (DDIM) steps per output (default 10)")
    p.add_argument("--seed", type=int, default=0, help="random seed of token sampling and diffusion (default 0)")
    p.add_argument("--temperature", type=float, default=1.0, help="token sampling temperature (0 = greedy)")
    p.add_argument("--top-p", type=float, default=0.8,
                   help="nucleus sampling: keep the top tokens that reach this probability (default 0.8; 0 = off)")
    p.add_argument("--top-k", type=_count_or_fraction, default=0,
                   help="keep the k most likely tokens, or a fraction of the vocabulary with 0 < k < 1 (default 0 = off)")
    p.add_argument("--decoding-steps", type=int, default=1, help="ROAR steps per output (default 1)")
    p.add_argument("--output-dir", default="generated", help="where outputs go (default ./generated)")
    p.add_argument("--crop", type=int, default=224, help="chip size for tiled generation (default 224)")
    p.add_argument("--stride", type=int, default=192, help="chip spacing (default 192)")
    p.add_argument("--batch-size", type=int, default=4, help="chips per forward pass (default 4)")
    p.add_argument("--stream", action="store_true", help="always stream scenes from disk")
    p.add_argument("--stream-above", type=int, default=DEFAULT_STREAM_ABOVE,
                   help=f"stream scenes with more pixels than this (default {DEFAULT_STREAM_ABOVE})")
    p.add_argument("--lulc-probabilities", action="store_true", help="also write LULC class probabilities")
    p.add_argument("--no-preview", action="store_true", help="do not write PNG previews")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    return p


def add_scene_arguments(p: argparse.ArgumentParser, required: bool = True) -> None:
    """--inputs / --modalities: the GeoTIFF scenes (shared by generate and geolocate)."""
    p.add_argument("--inputs", nargs="+", required=required, metavar="[MOD=]PATH",
                   help="MOD=FILE or MOD=FOLDER per input modality, or one FOLDER with modality sub-folders")
    p.add_argument("--modalities", nargs="+", metavar="MOD",
                   help="input modalities to take from a FOLDER given without MOD= (default: S2L2A)")
    p.add_argument("--linear-to-db", nargs="+", default=[], metavar="MOD",
                   help="input modalities whose files hold linear backscatter (power, e.g. Planetary Computer's "
                        "S1 RTC): read as 10 * log10(value), the dB of TerraMind's statistics")


def add_weight_arguments(p: argparse.ArgumentParser, default_model: str) -> None:
    """--model / --pretrained / --ckpt-path: which generation model and weights (generate and geolocate)."""
    p.add_argument("--model", default=default_model, help=f"FULL_MODEL_REGISTRY name (default {default_model})")
    p.add_argument("--pretrained", action=argparse.BooleanOptionalAction, default=True,
                   help="download the official weights (default); --no-pretrained starts from random weights")
    p.add_argument("--ckpt-path", help="local TerraMind checkpoint (official layout) instead of the download")


def _split_pair(entry: str, option: str) -> tuple[str | None, str]:
    if "=" in entry:
        name, _, path = entry.partition("=")
        if not name or not path:
            raise ConfigError(f"expected MOD=PATH, got {entry!r}", key=option)
        return name, path
    return None, entry


def _modality(name: str, option: str) -> Modality:
    modality = find_modality(name)
    if modality is None:
        raise ConfigError(f"unknown modality {name!r}; known: {', '.join(MODALITIES)}", key=option)
    return modality


def _rasters(folder: Path) -> dict[str, Path]:
    return {p.stem: p for p in sorted(folder.iterdir()) if p.is_file() and p.suffix.lower() in RASTER_SUFFIXES}


def discover_scenes(entries: Sequence[str], modalities: Sequence[str] | None) -> dict[str, dict[str, Path]]:
    """``{scene stem: {input modality: raster path}}`` from the ``--inputs`` entries (see the module docstring)."""
    per_modality: dict[str, dict[str, Path]] = {}  # canonical modality -> {stem: path}
    for entry in entries:
        name, raw_path = _split_pair(entry, "--inputs")
        path = Path(raw_path).expanduser()
        if not path.exists():
            raise DataNotFoundError(f"--inputs: {str(path)!r} does not exist" + (f" (modality {name})" if name else ""))
        if name is not None:
            modality = _modality(name, "--inputs")
            files = {path.stem: path} if path.is_file() else _rasters(path)
            if not files:
                raise DataNotFoundError(f"--inputs: no .tif files in {path} (modality {modality.name})")
            per_modality.setdefault(modality.name, {}).update(files)
            continue
        wanted = [_modality(m, "--modalities") for m in (modalities or ["S2L2A"])]
        if path.is_file():
            if len(wanted) != 1:
                raise ConfigError(f"{path} is one file but --modalities lists {len(wanted)}; give MOD=FILE pairs",
                                  key="--inputs")
            per_modality.setdefault(wanted[0].name, {})[path.stem] = path
            continue
        subfolders = {p.name: p for p in sorted(path.iterdir()) if p.is_dir()}
        for modality in wanted:
            match = next((sub for sub_name, sub in subfolders.items()
                          if (found := find_modality(sub_name)) is not None and found.name == modality.name), None)
            if match is None:
                raise DataNotFoundError(f"--inputs: {path} has no sub-folder for modality {modality.name} (found: "
                                        f"{', '.join(subfolders) or 'none'}); pass {modality.name}=FOLDER instead")
            files = _rasters(match)
            if not files:
                raise DataNotFoundError(f"--inputs: no .tif files in {match} (modality {modality.name})")
            per_modality.setdefault(modality.name, {}).update(files)
    stems = sorted(set().union(*(files.keys() for files in per_modality.values())))
    scenes: dict[str, dict[str, Path]] = {}
    for stem in stems:
        missing = [m for m, files in per_modality.items() if stem not in files]
        if missing:
            raise DataNotFoundError(f"scene {stem!r} has no raster for modality {', '.join(missing)} "
                                    f"(files are matched by name across the input folders)")
        scenes[stem] = {m: files[stem] for m, files in per_modality.items()}
    return scenes


# ------------------------------------------------------------------------------------------------- the model


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def scene_inputs(args: argparse.Namespace) -> tuple[dict[str, dict[str, Path]], list[str], Path, torch.device]:
    """What a scene command (generate, geolocate) starts from: the scenes of ``--inputs``, their modalities,
    the output folder (created) and the device."""
    scenes = discover_scenes(args.inputs, args.modalities)
    modalities = list(next(iter(scenes.values())))
    args.linear_to_db = _linear_to_db(getattr(args, "linear_to_db", []), modalities)
    out_dir = Path(args.output_dir).expanduser()
    out_dir.mkdir(parents=True, exist_ok=True)
    return scenes, modalities, out_dir, _device(args.device)


def _linear_to_db(names: Sequence[str], modalities: Sequence[str]) -> list[str]:
    """The canonical names of ``--linear-to-db``: input modalities whose statistics are in dB."""
    chosen = []
    for name in names:
        modality = _modality(name, "--linear-to-db")
        if modality.name not in modalities:
            raise ConfigError(f"{name} is not an input modality ({', '.join(modalities)})", key="--linear-to-db")
        if not modality.in_decibels:
            raise ConfigError(f"{modality.name} is not in dB ({modality.units}): only backscatter has a linear form",
                              key="--linear-to-db")
        chosen.append(modality.name)
    return chosen


def _count_or_fraction(text: str) -> int | float:
    """``5`` -> 5 tokens, ``0.01`` -> 1 % of the vocabulary (the reference's float top_k)."""
    value = float(text)
    return int(value) if value.is_integer() else value


def build_model(args: argparse.Namespace, input_modalities: Sequence[str]) -> Any:
    from terramind_ft.registry import FULL_MODEL_REGISTRY

    tokenizer_kwargs: dict[str, dict[str, Any]] = {}
    for entry in args.tokenizer_ckpt:
        name, path = _split_pair(entry, "--tokenizer-ckpt")
        if name is None:
            raise ConfigError(f"expected MOD=FILE, got {entry!r}", key="--tokenizer-ckpt")
        tokenizer_kwargs[MODALITIES[resolve_output(name, key="--tokenizer-ckpt")[0]].name] = {"ckpt_path": path}
    needs_tokenizer = {MODALITIES[resolve_output(o, key="--outputs")[0]].name for o in args.outputs}
    needs_tokenizer |= {m for m in input_modalities if MODALITIES[m].kind == "token"}
    random_parts = []
    if not args.pretrained and not args.ckpt_path:
        random_parts.append("TerraMind")
    random_parts += [f"{m} tokenizer" for m in sorted(needs_tokenizer)
                     if not args.pretrained and m not in tokenizer_kwargs]
    if random_parts and not args.allow_random_weights:
        raise ConfigError(f"{', '.join(random_parts)} would start from random weights (--no-pretrained without "
                          "--ckpt-path / --tokenizer-ckpt), which generates meaningless images. Drop "
                          "--no-pretrained to download the official weights, pass local files, or add "
                          "--allow-random-weights for a smoke test.", key="--pretrained")
    if random_parts:
        args.weights_provenance = f"random ({', '.join(random_parts)})"
        print(f"warning: {', '.join(random_parts)} start from random weights (--allow-random-weights): the generated "
              f"images are meaningless; every output is tagged {WEIGHTS_TAG}=random", file=sys.stderr, flush=True)
    else:
        args.weights_provenance = f"checkpoint {args.ckpt_path}" if args.ckpt_path else "pretrained"
    for kwargs in tokenizer_kwargs.values():
        kwargs.setdefault("pretrained", False)
    for modality in needs_tokenizer - set(tokenizer_kwargs):
        tokenizer_kwargs[modality] = {"pretrained": bool(args.pretrained)}
    # --seed covers the weights too when they are random (and the tokenizers' lazily built parts): the same
    # command gives the same outputs
    torch.manual_seed(args.seed)
    with warnings.catch_warnings():
        if args.allow_random_weights:
            warnings.filterwarnings("ignore", message=".*random weights.*")
        model = FULL_MODEL_REGISTRY.build(
            args.model, _key="--model", modalities=list(input_modalities), output_modalities=list(args.outputs),
            pretrained=bool(args.pretrained and not args.ckpt_path), ckpt_path=args.ckpt_path,
            standardize=False, timesteps=args.timesteps, temps=args.temperature, top_p=args.top_p,
            top_k=args.top_k, decoding_steps=args.decoding_steps, seed=args.seed, tokenizer_kwargs=tokenizer_kwargs,
        )
    return model


class _Forward:
    """Chips of standardised inputs -> all outputs stacked on the channel axis, in physical units."""

    def __init__(self, model: Any, outputs: Sequence[str], timesteps: int, seed: int):
        self.model, self.outputs, self.timesteps, self.seed = model, list(outputs), timesteps, seed

    def __call__(self, chips: dict[str, torch.Tensor]) -> torch.Tensor:
        result = self.model(chips, timesteps=self.timesteps, seed=self.seed)
        return torch.cat([self.model.to_physical(name, result[name]).float() for name in self.outputs], dim=1)


def output_bands(outputs: Sequence[str]) -> list[tuple[str, Modality, slice]]:
    """(output name, modality, channel slice in the stacked result) per output."""
    bands, start = [], 0
    for name in outputs:
        modality = MODALITIES[resolve_output(name, key="--outputs")[0]]
        count = modality.num_classes or modality.num_bands
        bands.append((name, modality, slice(start, start + count)))
        start += count
    return bands


# ------------------------------------------------------------------------------------------------- reading


def read_scene(scene: dict[str, Path], linear_to_db: Sequence[str] = ()
               ) -> tuple[dict[str, torch.Tensor], np.ndarray, Path]:
    """Standardised inputs ``{modality: [1, C, H, W]}``, the nodata mask ``[H, W]`` and the reference raster;
    ``linear_to_db`` modalities are read as dB. Values on another scale than the statistics get a notice."""
    from terramind_ft.data.raster import read_header, read_raster, same_georeference, to_decibels
    from terramind_ft.data.value_scale import ValueScaleNotice, scale_mismatch

    reference = next(iter(scene.values()))
    ref_header = read_header(reference, next(iter(scene)))
    inputs: dict[str, torch.Tensor] = {}
    nodata = np.zeros((ref_header.height, ref_header.width), bool)
    for name, path in scene.items():
        modality = MODALITIES[name]
        header = read_header(path, name)
        if not same_georeference(header, ref_header) or (header.height, header.width) != (ref_header.height,
                                                                                        ref_header.width):
            raise RasterMismatchError(f"{path} (modality {name}) is not on the pixel grid of {reference}; "
                                      "resample it onto the same grid (gdalwarp -tr/-te) first")
        expected = modality.num_bands if not modality.is_categorical else 1
        if header.count != expected:
            raise DataError(f"{path} (modality {name}) has {header.count} bands; TerraMind expects {expected} "
                            f"({', '.join(modality.bands) if not modality.is_categorical else 'class index'})")
        data, invalid = read_raster(path, name)
        if name in linear_to_db:
            to_decibels(data, invalid)
        if not modality.is_categorical:
            problem = scale_mismatch(data, invalid, modality.mean, modality.std, bands=modality.bands,
                                     may_be_flat=modality.may_be_flat, decibels=modality.in_decibels)
            if problem:
                fix = f"pass --linear-to-db {name}" if problem.kind == "linear" else "rescale the file"
                warnings.warn(f"{path} (modality {name}): {problem}; {fix}", ValueScaleNotice, stacklevel=2)
        mask = invalid.any(axis=0)
        nodata |= mask
        if modality.is_categorical:
            data = np.where(mask, 0, data)
            if data.size and (data.min() < 0 or data.max() >= (modality.num_classes or 0)):
                raise DataError(f"{path} (modality {name}) holds values outside the class range 0..."
                                f"{(modality.num_classes or 1) - 1}")
        else:
            mean = np.asarray(modality.mean, np.float32)[:, None, None]
            std = np.asarray(modality.std, np.float32)[:, None, None]
            data = np.where(invalid, 0.0, (data - mean) / std).astype(np.float32)  # nodata -> the mean
        inputs[name] = torch.from_numpy(np.ascontiguousarray(data))[None]
    return inputs, nodata, reference


# ------------------------------------------------------------------------------------------------- writing


def grid_of(reference: Path) -> tuple[Any, Any, int, int]:
    """(crs, transform, height, width) of a raster."""
    import rasterio

    with rasterio.open(reference) as src:
        return src.crs, src.transform, src.height, src.width


def grid_at(lon: float, lat: float, size: int, resolution: float) -> tuple[Any, Any, int, int]:
    """A ``size`` x ``size`` grid of ``resolution`` metres centred on (lon, lat), in its UTM zone (WGS 84)."""
    from rasterio.crs import CRS
    from rasterio.transform import Affine
    from rasterio.warp import transform

    zone = min(60, int((lon + 180) // 6) + 1)
    crs = CRS.from_epsg((32600 if lat >= 0 else 32700) + zone)
    xs, ys = transform("EPSG:4326", crs, [lon], [lat])
    half = size * resolution / 2
    return crs, Affine(resolution, 0.0, xs[0] - half, 0.0, -resolution, ys[0] + half), size, size


class OutputFiles:
    """One GeoTIFF per output on the reference grid, filled strip by strip. Each is written to a temp file
    (:func:`terramind_ft.io.atomic_path` entered on ``stack``) that closing ``stack`` without an error renames
    onto its final name, and closing it with an error deletes."""

    def __init__(self, stack: ExitStack, grid: tuple[Any, Any, int, int], out_dir: Path, stem: str,
                 bands: list[tuple[str, Modality, slice]], lulc_probabilities: bool, tags: dict[str, str]):
        """``grid``: (crs, transform, height, width) of the outputs (:func:`grid_of` a reference raster)."""
        crs, transform, self.height, self.width = grid
        import rasterio

        common: dict[str, Any] = dict(driver="GTiff", width=self.width, height=self.height, crs=crs,
                                      transform=transform, compress="deflate", BIGTIFF="IF_SAFER")
        if min(self.height, self.width) >= 512:
            common.update(tiled=True, blockxsize=512, blockysize=512)
        self.paths: list[Path] = []  # final names, in output order
        self.writers: list[tuple[Any, slice, str]] = []  # (dataset, channel slice, kind)
        for name, modality, channels in bands:
            kinds = ["class_map", "probabilities"] if modality.is_categorical and lulc_probabilities else \
                (["class_map"] if modality.is_categorical else ["values"])
            for kind in kinds:
                suffix = "_probabilities" if kind == "probabilities" else ""
                final = out_dir / f"{stem}_{name}{suffix}.tif"
                tmp = stack.enter_context(atomic_path(final))  # entered first: the dataset closes before the rename
                self.paths.append(final)
                if kind == "class_map":
                    spec = dict(count=1, dtype="uint8", nodata=CLASS_NODATA)
                else:
                    spec = dict(count=channels.stop - channels.start, dtype="float32", nodata=float("nan"))
                dst = stack.enter_context(rasterio.open(tmp, "w", **common, **spec))
                dst.update_tags(**tags, modality=modality.name, units=modality.units)
                if kind == "class_map":

                    dst.write_colormap(1, class_colormap(len(LULC_CLASSES)))
                    dst.set_band_description(1, "class (" + ", ".join(f"{k}={c}" for k, c in
                                                                      enumerate(LULC_CLASSES)) + ")")
                else:
                    names = LULC_CLASSES if modality.is_categorical else modality.bands
                    for b, band in enumerate(names, start=1):
                        dst.set_band_description(b, band)
                self.writers.append((dst, channels, kind))

    def write_rows(self, row: int, stacked: np.ndarray, nodata: np.ndarray) -> None:
        """``stacked`` float32 ``[K, n, W]`` physical values of rows ``row..row+n``; ``nodata`` bool ``[n, W]``."""
        from rasterio.windows import Window

        n = stacked.shape[1]
        window = Window(0, row, self.width, n)
        invalid = nodata | ~np.isfinite(stacked).all(axis=0)
        for dst, channels, kind in self.writers:
            values = stacked[channels]
            if kind == "class_map":
                out = np.nan_to_num(values, nan=-1.0).argmax(axis=0).astype(np.uint8)[None]
                out[:, invalid] = CLASS_NODATA
            else:
                out = values.astype(np.float32, copy=True)
                out[:, invalid] = np.nan
            dst.write(out, window=window)


def _rgb_panel(data: np.ndarray, modality: Modality) -> np.ndarray:
    """Stretched RGB (or grey) image [H, W, 3] of a physical-unit raster [C, H, W]."""
    from terramind_ft.data.plot import _stretch

    indices = [modality.band_index(b) for b in ("RED", "GREEN", "BLUE")]
    if all(i is not None for i in indices):
        return _stretch(data[indices])  # type: ignore[index]
    return np.repeat(_stretch(data[:1]), 3, axis=-1)


def write_preview(path: Path, scene: dict[str, Path], written: dict[str, Path], bands,
                  weights: str | None = None) -> Path:
    """Input RGB beside every generated modality (decimated to at most PREVIEW_MAX_SIDE pixels)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import rasterio
    from matplotlib.patches import Patch

    from terramind_ft.data.plot import class_colours, save_figure

    def read_small(file: Path) -> np.ndarray:
        with rasterio.open(file) as src:
            scale = max(1, math.ceil(max(src.height, src.width) / PREVIEW_MAX_SIDE))
            shape = (src.count, max(1, src.height // scale), max(1, src.width // scale))
            data = src.read(out_shape=shape, masked=True).astype(np.float32)
            return data.filled(np.nan)

    panels = []
    if scene:  # generated from images: the input first (from a location there is none)
        input_name = next((m for m in scene if m in ("S2L2A", "S2L1C", "RGB")), next(iter(scene)))
        panels.append((f"input {input_name}", _rgb_panel(read_small(scene[input_name]), MODALITIES[input_name]), {}))
    legend = None
    for name, modality, _ in bands:
        data = read_small(written[name])
        if modality.is_categorical:
            colours = class_colours(len(LULC_CLASSES))
            classes = np.nan_to_num(data[0], nan=CLASS_NODATA).astype(int)
            rgb = np.zeros(classes.shape + (3,), np.float32)
            for k, colour in enumerate(colours):
                rgb[classes == k] = colour
            panels.append((f"{name} (generated)", rgb, {}))
            present = sorted(set(np.unique(classes).tolist()) - {CLASS_NODATA})
            legend = [Patch(color=colours[k], label=LULC_CLASSES[k]) for k in present]
        elif modality.name == "DEM":
            panels.append((f"{name} (generated, m)", data[0], {"cmap": "terrain"}))
        elif modality.name == "NDVI":
            panels.append((f"{name} (generated)", data[0], {"cmap": "RdYlGn", "vmin": NDVI_RANGE[0],
                                                             "vmax": NDVI_RANGE[1]}))
        else:
            panels.append((f"{name} (generated)", _rgb_panel(data, modality), {}))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.6), squeeze=False)
    for ax, (title, image, style) in zip(axes[0], panels):
        shown = ax.imshow(image, **style)
        if style:
            fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.02)
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    if legend:
        fig.legend(handles=legend, loc="lower center", ncol=min(len(legend), 5), fontsize=7)
    title = path.stem.removesuffix("_preview")
    if weights and weights.startswith("random"):
        title += "   RANDOM WEIGHTS: not a real generation"
    fig.suptitle(title, fontsize=10, color="crimson" if weights and weights.startswith("random") else "black")
    try:
        return Path(save_figure(fig, path))
    finally:
        plt.close(fig)


# ------------------------------------------------------------------------------------------------- running


def generate_scene(model: Any, args: argparse.Namespace, stem: str, scene: dict[str, Path], out_dir: Path,
                   device: torch.device) -> list[Path]:
    """Generate one scene; returns the files written."""
    import rasterio

    from terramind_ft.inference.tiling import tiled_inference

    bands = output_bands(args.outputs)
    forward = _Forward(model, args.outputs, args.timesteps, args.seed)
    tags = {"software": "terramind-ft generate", "model": args.model, "seed": str(args.seed),
            "timesteps": str(args.timesteps), "inputs": ", ".join(f"{m}={p}" for m, p in scene.items()),
            WEIGHTS_TAG: getattr(args, "weights_provenance", "unknown")}
    reference = next(iter(scene.values()))
    with rasterio.open(reference) as src:
        pixels = src.height * src.width
    with ExitStack() as stack:
        files = OutputFiles(stack, grid_of(reference), out_dir, stem, bands, args.lulc_probabilities, tags)
        if args.stream or pixels > args.stream_above:
            _generate_streaming(forward, args, scene, files, out_dir, stem, device)
        else:
            inputs, nodata, _ = read_scene(scene, args.linear_to_db)
            inputs = {k: v.to(device) for k, v in inputs.items()}
            height, width = nodata.shape
            if height <= args.crop and width <= args.crop:
                stacked = forward(inputs)
            else:
                stacked = tiled_inference(forward, inputs, crop=args.crop, stride=args.stride,
                                          batch_size=args.batch_size, verbose=True)
            files.write_rows(0, stacked[0].float().cpu().numpy(), nodata)
    # Leaving the block closed every output and renamed it into place (or, on an error, deleted it).
    written = list(files.paths)
    if not args.no_preview:
        by_output = {name: out_dir / f"{stem}_{name}.tif" for name, _, _ in bands}
        written.append(write_preview(out_dir / f"{stem}_preview.png", scene, by_output, bands,
                                     weights=getattr(args, "weights_provenance", None)))
    return written


def _generate_streaming(forward: _Forward, args: argparse.Namespace, scene: dict[str, Path], files: OutputFiles,
                        out_dir: Path, stem: str, device: torch.device) -> None:
    """predict_scene streams the inputs into one stacked float32 raster; it is then copied strip by strip."""
    import rasterio
    from rasterio.windows import Window

    from terramind_ft.inference.scene import predict_scene

    # A scratch file, always deleted and never renamed onto an output (so not terramind_ft.io.atomic_path);
    # predict_scene writes it atomically itself.
    fd, tmp = tempfile.mkstemp(prefix=f".{stem}_stacked.", suffix=".tif", dir=out_dir)
    os.close(fd)
    stacked_path = Path(tmp)
    try:
        predict_scene(forward, {m: str(p) for m, p in scene.items()}, stacked_path, crop=args.crop,
                      stride=args.stride, batch_size=args.batch_size, task="regression", layout="gtiff",
                      overviews=False, device=device, verbose=True, linear_to_db=args.linear_to_db)
        with rasterio.open(stacked_path) as src:
            for row in range(0, src.height, STRIP_ROWS):
                n = min(STRIP_ROWS, src.height - row)
                values = src.read(window=Window(0, row, src.width, n)).astype(np.float32)
                files.write_rows(row, values, ~np.isfinite(values).all(axis=0))
    finally:
        if stacked_path.exists():
            stacked_path.unlink()


_LOCATION = re.compile(r"^[-+]?\d+(\.\d*)?,[-+]?\d+(\.\d*)?$")


def _attach_locations(argv: list[str]) -> list[str]:
    """``--coords -3.7,40.4 8.5,47.4`` -> ``--coords=-3.7,40.4 --coords=8.5,47.4``: argparse would read a
    western longitude as an option."""
    out, i = [], 0
    while i < len(argv):
        if argv[i] == "--coords":
            i += 1
            while i < len(argv) and _LOCATION.match(argv[i]):
                out.append(f"--coords={argv[i]}")
                i += 1
            continue
        out.append(argv[i])
        i += 1
    return out


def parse_locations(entries: Sequence[str]) -> list[tuple[float, float]]:
    """``["-3.70,40.42", ...]`` -> [(lon, lat), ...], checked."""
    from terramind_ft.models.tokenizers.coords import location_problem

    locations = []
    for entry in entries:
        try:
            lon, lat = (float(v) for v in entry.split(","))
        except ValueError:
            raise ConfigError(f"expected LON,LAT in degrees, got {entry!r}", key="--coords") from None
        problem = location_problem(lon, lat, order=("LAT,LON", "LON,LAT"))
        if problem:
            raise ConfigError(f"{entry!r} is {problem}", key="--coords")
        locations.append((lon, lat))
    return locations


def generate_location(model: Any, args: argparse.Namespace, lon: float, lat: float, out_dir: Path,
                      device: torch.device) -> list[Path]:
    """Generate a --size px scene for one location, georeferenced around it (UTM, --resolution m)."""
    stem = f"lat{lat:+.4f}_lon{lon:+.4f}"
    bands = output_bands(args.outputs)
    tags = {"software": "terramind-ft generate", "model": args.model, "seed": str(args.seed),
            "timesteps": str(args.timesteps), "inputs": f"coords lon={lon} lat={lat}",
            "note": "generated for this location; not an observation of it",
            WEIGHTS_TAG: getattr(args, "weights_provenance", "unknown")}
    with ExitStack() as stack:
        files = OutputFiles(stack, grid_at(lon, lat, args.size, args.resolution), out_dir, stem, bands,
                            args.lulc_probabilities, tags)
        result = model({"coords": torch.tensor([[lon, lat]], device=device)}, timesteps=args.timesteps,
                       seed=args.seed, image_size=(args.size, args.size))
        stacked = torch.cat([model.to_physical(name, result[name]).float() for name in args.outputs], dim=1)
        files.write_rows(0, stacked[0].cpu().numpy(), np.zeros((args.size, args.size), bool))
    written = list(files.paths)
    if not args.no_preview:
        by_output = {name: out_dir / f"{stem}_{name}.tif" for name, _, _ in bands}
        written.append(write_preview(out_dir / f"{stem}_preview.png", {}, by_output, bands,
                                     weights=getattr(args, "weights_provenance", None)))
    return written


def main(argv: Sequence[str] | None = None) -> int:
    """Errors propagate as typed errors: ``terramind-ft generate`` reports them (terramind_ft.cli.report)."""
    from terramind_ft.cli.signals import stop_at_once

    parser = build_parser()
    args = parser.parse_args(_attach_locations(list(argv) if argv is not None else sys.argv[1:]))
    with stop_at_once():
        if args.timesteps < 1 or args.crop < 16 or not 0 < args.stride <= args.crop or args.batch_size < 1:
            raise ConfigError("need --timesteps >= 1, --crop >= 16, 0 < --stride <= --crop, --batch-size >= 1")
        if bool(args.inputs) == bool(args.coords):
            raise ConfigError("give either --inputs (GeoTIFF scenes) or --coords (locations)", key="--inputs")
        if args.coords:
            return _main_locations(args)
        scenes, input_modalities, out_dir, device = scene_inputs(args)
        model = build_model(args, input_modalities).to(device)
        print(f"generating {', '.join(args.outputs)} from {', '.join(input_modalities)} for {len(scenes)} scene(s) "
              f"with {args.model} on {device}", flush=True)
        from tqdm.auto import tqdm

        for stem, scene in tqdm(scenes.items(), desc="scenes", unit="scene", disable=len(scenes) < 2):
            for path in generate_scene(model, args, stem, scene, out_dir, device):
                print(f"wrote {path}", flush=True)
    return 0


def coords_tokenizer_ckpt(args: argparse.Namespace) -> list[str]:
    """The ``--tokenizer-ckpt`` entry of ``--coords-tokenizer`` (none: the hub's, with ``--pretrained``); the
    vocabulary has no random form, so ``--no-pretrained`` without a file is refused (generate and geolocate)."""
    if not args.pretrained and not args.coords_tokenizer:
        raise ConfigError("the coords tokenizer is a vocabulary and has no random form: give --coords-tokenizer "
                          "FILE (the config.json of ibm-esa-geospatial/TerraMind-1.0-Tokenizer-Coords) or drop "
                          "--no-pretrained to download it", key="--coords-tokenizer")
    return [f"coords={args.coords_tokenizer}"] if args.coords_tokenizer else []


def _main_locations(args: argparse.Namespace) -> int:
    locations = parse_locations(args.coords)
    if args.size < 16 or args.resolution <= 0:
        raise ConfigError("need --size >= 16 and --resolution > 0", key="--size")
    args.tokenizer_ckpt = [*args.tokenizer_ckpt, *coords_tokenizer_ckpt(args)]
    out_dir = Path(args.output_dir).expanduser()
    out_dir.mkdir(parents=True, exist_ok=True)
    device = _device(args.device)
    model = build_model(args, ["Coordinates"]).to(device)
    print(f"generating {', '.join(args.outputs)} for {len(locations)} location(s) with {args.model} on {device}",
          flush=True)
    for lon, lat in locations:
        for path in generate_location(model, args, lon, lat, out_dir, device):
            print(f"wrote {path}", flush=True)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
