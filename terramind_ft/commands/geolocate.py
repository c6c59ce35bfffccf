"""``terramind-ft geolocate``: where does TerraMind think an image was taken? A map and the top-k locations.

Examples::

    terramind-ft geolocate --inputs S2L2A=chips/ --top-k 5 --output-dir where/
    terramind-ft geolocate --inputs examples/terramesh --modalities S2L2A S1RTC --output-dir where/

TerraMind's generator decodes a location as coords tokens (``lat=.. lon=..`` on a 0.25 degree grid). For every
scene this writes ``<stem>_location.tif``: the model's probability of each 0.25 degree cell (float32, EPSG:4326,
721 x 1440 pixels centred on the grid values, summing to 1; exact, not sampled:
:mod:`terramind_ft.models.terramind.geolocation`), and ``<stem>_location.png``: the map (log scale) with the
top-k cells and, when the input is georeferenced, its true centre. ``locations.csv`` lists the top-k cells of
every scene with their probability, the true centre and the great-circle distance to it; ``metrics.json`` holds
the top-1 error (median, mean, km) and the share of scenes within 1 / 25 / 200 / 750 / 2500 km (street, city,
region, country, continent: the usual image-geolocation thresholds).

A scene larger than ``--crop`` pixels is read tile by tile (``--crop`` tiles streamed from disk, tiles that are
mostly nodata skipped); its map is the mean of the tiles' maps. Weights: ``--pretrained`` (default) downloads
``ibm-esa-geospatial/TerraMind-1.0-<size>`` and the coords tokenizer (``ibm-esa-geospatial/TerraMind-1.0-Tokenizer-Coords``); ``--ckpt-path`` and
``--coords-tokenizer FILE`` use local files. Random weights (``--no-pretrained --allow-random-weights``) give
meaningless maps, tagged ``TERRAMIND_FT_WEIGHTS=random``; the coords vocabulary has no random form, so it always
comes from the hub or ``--coords-tokenizer``.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from terramind_ft.errors import ConfigError, DataError

DEFAULT_MODEL = "terramind_v1_base_generate"
THRESHOLDS_KM = (1, 25, 200, 750, 2500)
MAX_NODATA_SHARE = 0.5  # chips with more nodata than this are not geolocated


def build_parser() -> argparse.ArgumentParser:
    from terramind_ft.commands.generate import add_scene_arguments, add_weight_arguments, command_parser

    p = command_parser("terramind-ft geolocate", "TerraMind's distribution over locations for GeoTIFF scenes: a "
                       "probability map (EPSG:4326, 0.25 degree) and the top-k locations.", __doc__)
    add_scene_arguments(p)
    add_weight_arguments(p, DEFAULT_MODEL)
    p.add_argument("--coords-tokenizer", metavar="FILE",
                   help="local coords tokenizer (the hub's config.json) instead of the download")
    p.add_argument("--allow-random-weights", action="store_true",
                   help="accept random weights (tests, smoke runs); the maps are then meaningless")
    p.add_argument("--top-k", type=int, default=5, help="locations listed per scene (default 5)")
    p.add_argument("--crop", type=int, default=224, help="chip size (default 224)")
    p.add_argument("--output-dir", default="geolocated", help="where outputs go (default ./geolocated)")
    p.add_argument("--no-preview", action="store_true", help="do not write PNG previews")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    return p


def build_model(args: argparse.Namespace, input_modalities: Sequence[str]) -> Any:
    """The generation model with the coords output, through ``terramind-ft generate``'s weight handling."""
    from terramind_ft.commands import generate

    gen_args = argparse.Namespace(
        model=args.model, outputs=["coords"], pretrained=args.pretrained, ckpt_path=args.ckpt_path,
        tokenizer_ckpt=generate.coords_tokenizer_ckpt(args),
        allow_random_weights=args.allow_random_weights, timesteps=1, temperature=0.0, top_p=0.0, top_k=0,
        decoding_steps=1, seed=0)
    model = generate.build_model(gen_args, input_modalities)
    args.weights_provenance = gen_args.weights_provenance
    return model


def true_centre(reference: Path) -> tuple[float, float] | None:
    """(lon, lat) of the scene's centre, or None when it has no CRS."""
    import rasterio
    from rasterio.warp import transform

    with rasterio.open(reference) as src:
        if src.crs is None:
            return None
        x, y = src.xy(src.height / 2 - 0.5, src.width / 2 - 0.5)
        lon, lat = transform(src.crs, "EPSG:4326", [x], [y])
    return float(lon[0]), float(lat[0])


def geolocate_scene(model: Any, scene: dict[str, Path], crop: int, device: Any,
                    linear_to_db: Sequence[str] = ()) -> Any:
    """The scene's LocationDistribution: the mean over its ``crop`` tiles, streamed from disk
    (:class:`~terramind_ft.inference.tiles.SceneTiles`, TerraMind's pretraining standardisation)."""
    import torch

    from terramind_ft.inference.tiles import SceneTiles
    from terramind_ft.models.terramind.geolocation import LocationDistribution

    # a location needs no georeference; truth does
    tiles = SceneTiles(scene, crop, require_georeference=False, linear_to_db=linear_to_db)
    maps, masses = [], []
    for tile in tiles:
        if tile.invalid_share > MAX_NODATA_SHARE:
            continue
        dist = model.location_distribution({m: v[None].to(device) for m, v in tile.inputs.items()})
        maps.append(dist.probabilities[0].cpu())
        masses.append(dist.location_mass[0].cpu())
    if not maps:
        raise DataError(f"{next(iter(scene.values()))}: every {crop}-px tile is more than {MAX_NODATA_SHARE:.0%} "
                        "nodata; nothing to geolocate")
    return LocationDistribution(probabilities=torch.stack(maps).mean(0, keepdim=True),
                                location_mass=torch.stack(masses).mean(0, keepdim=True))


def write_preview(path: Path, dist: Any, top: list[tuple[float, float, float]], truth: tuple[float, float] | None,
                  title: str, random_weights: bool) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    from terramind_ft.data.plot import save_figure

    probabilities = dist.probabilities[0].numpy()
    floor = max(float(probabilities.max()) * 1e-6, 1e-12)
    fig, ax = plt.subplots(figsize=(9, 4.8))
    shown = ax.imshow(np.maximum(probabilities, floor), extent=(-180.125, 179.875, -90.125, 90.125),
                      norm=LogNorm(vmin=floor, vmax=max(float(probabilities.max()), floor * 10)), cmap="magma")
    fig.colorbar(shown, ax=ax, fraction=0.025, pad=0.02, label="probability per 0.25° cell")
    for rank, (lon, lat, p) in enumerate(top, start=1):
        ax.plot(lon, lat, "o", mfc="none", mec="cyan", ms=8)
        ax.annotate(f"{rank}: {p:.2g}", (lon, lat), xytext=(4, 4), textcoords="offset points", color="cyan",
                    fontsize=7)
    if truth is not None:
        ax.plot(*truth, "*", color="lime", ms=12, label="true centre")
        ax.legend(loc="lower left", fontsize=7)
    ax.set_xlabel("longitude")
    ax.set_ylabel("latitude")
    ax.set_xticks(range(-180, 181, 60))
    ax.set_yticks(range(-90, 91, 30))
    ax.grid(alpha=0.3)
    if random_weights:
        title += "   RANDOM WEIGHTS: not a real prediction"
    ax.set_title(title, fontsize=10, color="crimson" if random_weights else "black")
    try:
        return Path(save_figure(fig, path))
    finally:
        plt.close(fig)


def summarise(errors_km: list[float]) -> dict[str, Any]:
    if not errors_km:
        return {"scenes_with_truth": 0}
    return {"scenes_with_truth": len(errors_km), "top1_median_km": statistics.median(errors_km),
            "top1_mean_km": statistics.fmean(errors_km),
            **{f"within_{t}_km": sum(e <= t for e in errors_km) / len(errors_km) for t in THRESHOLDS_KM}}


def main(argv: Sequence[str] | None = None) -> int:
    import warnings

    import torch
    from rasterio.errors import NotGeoreferencedWarning
    from tqdm.auto import tqdm

    from terramind_ft.cli.signals import stop_at_once
    from terramind_ft.commands.generate import scene_inputs
    from terramind_ft.inference.geotiff import WEIGHTS_TAG
    from terramind_ft.io import atomic_write_json, atomic_write_text
    from terramind_ft.models.terramind.geolocation import great_circle_km

    args = build_parser().parse_args(list(argv) if argv is not None else None)
    with stop_at_once():
        if args.top_k < 1 or args.crop < 16:
            raise ConfigError("need --top-k >= 1 and --crop >= 16", key="--top-k" if args.top_k < 1 else "--crop")
        scenes, input_modalities, out_dir, device = scene_inputs(args)
        model = build_model(args, input_modalities).to(device)
        random_weights = args.weights_provenance.startswith("random")
        print(f"geolocating {len(scenes)} scene(s) from {', '.join(input_modalities)} with {args.model} on {device}",
              flush=True)
        rows: list[dict[str, Any]] = []
        errors: list[float] = []
        with torch.no_grad():
            for stem, scene in tqdm(scenes.items(), desc="geolocate", unit="scene", disable=len(scenes) < 2):
                with warnings.catch_warnings():  # a file without georeference is fine here: it has no truth
                    warnings.simplefilter("ignore", NotGeoreferencedWarning)
                    dist = geolocate_scene(model, scene, args.crop, device, args.linear_to_db)
                    truth = true_centre(next(iter(scene.values())))
                if truth is None:
                    print(f"note: {next(iter(scene.values()))} has no georeference: no true location to score "
                          "against", flush=True)
                top = dist.top_k(args.top_k)[0]
                tags = {"software": "terramind-ft geolocate", "model": args.model, WEIGHTS_TAG: args.weights_provenance,
                        "inputs": ", ".join(f"{m}={p}" for m, p in scene.items())}
                dist.write_geotiff(out_dir / f"{stem}_location.tif", tags=tags)
                for rank, (lon, lat, p) in enumerate(top, start=1):
                    distance = great_circle_km(lon, lat, *truth) if truth else math.nan
                    rows.append({"scene": stem, "rank": rank, "lon": lon, "lat": lat, "probability": p,
                                 "true_lon": truth[0] if truth else "", "true_lat": truth[1] if truth else "",
                                 "distance_km": round(distance, 1) if truth else ""})
                    if rank == 1 and truth:
                        errors.append(distance)
                if not args.no_preview:
                    write_preview(out_dir / f"{stem}_location.png", dist, top, truth, stem, random_weights)
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(out_dir / "locations.csv", buffer.getvalue())
        summary = {"weights": args.weights_provenance, "model": args.model, "scenes": len(scenes),
                   **summarise(errors)}
        atomic_write_json(out_dir / "metrics.json", summary)
    closing = f"geolocated {len(scenes)} scene(s)"
    if errors:
        closing += (f": top-1 error median {summary['top1_median_km']:.0f} km, "
                    f"{summary['within_750_km']:.0%} within 750 km")
    if random_weights:
        closing += " (RANDOM WEIGHTS: meaningless)"
    print(f"{closing} -> {out_dir / 'locations.csv'}", flush=True)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
