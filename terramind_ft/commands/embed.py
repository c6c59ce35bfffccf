"""``terramind-ft embed --config X.yaml``: TerraMind embeddings of every chip of a split, one row per chip.

The config is a training config (its data module and its task's backbone; ``backbone_pretrained`` and
``backbone_ckpt_path`` say which weights). For each chip the backbone runs once (eval, no augmentation, so the
result is deterministic); the chosen layers are pooled over the tokens and concatenated:

* ``--pooling mean | max | cls`` (``cls``: the first token; TerraMind has no class token, so it is the first
  patch) -> ``<output>/embeddings.parquet``, GeoParquet 1.0: ``chip_id`` (the first modality's file stem),
  ``file``, ``geometry`` (the chip's footprint, WKB polygon in the source CRS, which the ``geo`` metadata holds as
  PROJJSON), ``crs`` and ``embedding`` (fixed-size float32 list, layers x dim);
* ``--pooling none`` -> ``<output>/<chip_id>_embedding.tif``: the patch tokens as a GeoTIFF of ``dim x layers``
  bands on the chip's token grid (one pixel per 16 x 16 patch, the chip's CRS and a transform scaled to it).

Resumable: finished chips are written in parts (``<output>/parts/``, each atomically); a rerun skips the chips
already there, then the parts are joined into ``embeddings.parquet``. Needs ``pip install 'terramind-ft[embed]'``
(pyarrow, pyproj).
"""

from __future__ import annotations

import argparse
import json
import struct
from pathlib import Path
from typing import Any

from terramind_ft.errors import ConfigError

POOLINGS = ("mean", "max", "cls", "none")
PART_ROWS = 256


def _wkb_polygon(left: float, bottom: float, right: float, top: float) -> bytes:
    """A rectangle as little-endian WKB (type 3, one ring of 5 points)."""
    ring = [(left, bottom), (right, bottom), (right, top), (left, top), (left, bottom)]
    return struct.pack("<BIII", 1, 3, 1, len(ring)) + b"".join(struct.pack("<dd", x, y) for x, y in ring)


def _projjson(crs: Any) -> dict[str, Any] | None:
    if crs is None:
        return None
    import pyproj

    return pyproj.CRS.from_wkt(crs.to_wkt()).to_json_dict()


def pool(tokens: Any, how: str) -> Any:
    """[B, N, D] -> [B, D]."""
    if how == "mean":
        return tokens.mean(dim=1)
    if how == "max":
        return tokens.amax(dim=1)
    return tokens[:, 0]


def _done_chips(parts: Path) -> set[str]:
    import pyarrow.parquet as pq

    done: set[str] = set()
    for part in sorted(parts.glob("part-*.parquet")):
        done.update(pq.read_table(part, columns=["chip_id"]).column("chip_id").to_pylist())
    return done


def _write_part(parts: Path, rows: list[dict[str, Any]], dim: int, geo: dict[str, Any]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from terramind_ft.io import atomic_path

    schema = pa.schema([("chip_id", pa.string()), ("file", pa.string()), ("geometry", pa.binary()),
                        ("crs", pa.string()), ("embedding", pa.list_(pa.float32(), dim))],
                       metadata={b"geo": json.dumps(geo).encode()})
    table = pa.Table.from_pylist(rows, schema=schema)
    index = len(list(parts.glob("part-*.parquet")))
    with atomic_path(parts / f"part-{index:05d}.parquet", suffix=".parquet") as tmp:
        pq.write_table(table, tmp)


def _geo_metadata(crs: Any) -> dict[str, Any]:
    return {"version": "1.0.0", "primary_column": "geometry",
            "columns": {"geometry": {"encoding": "WKB", "geometry_types": ["Polygon"], "crs": _projjson(crs)}}}


def _vectors(features: Any, layers: list[int], pooling: str) -> Any:
    """One vector per sample: each chosen layer pooled over its tokens, the layers concatenated."""
    import torch

    return torch.cat([pool(features[i], pooling) for i in layers], dim=-1).float()


def _prepare(config_args: list[str], split: str, layers: list[int], batch_size: int | None
             ) -> tuple[Any, Any, Any, Any]:
    """The CLI object, the backbone (eval), the split's dataset (no augmentation) and the loader's arguments."""
    from terramind_ft.cli.app import build_cli
    from terramind_ft.data.transforms import Compose

    cli = build_cli(list(config_args), run=False)
    datamodule, encoder = cli.datamodule, cli.model.model.encoder.eval()
    _check_layers(encoder, layers)
    dataset = datamodule.make_dataset(split, transform=Compose([]))
    loader_args = {"batch_size": batch_size or datamodule.batch_size, "shuffle": False,
                   "num_workers": datamodule.num_workers}
    return cli, encoder, dataset, loader_args


def embed_split(config_args: list[str], split: str, layers: list[int], pooling: str = "mean",
                batch_size: int | None = None) -> tuple[Any, list[str], list[Any], Any]:
    """(vectors [N, D] float32 numpy, chip ids, targets (``label`` of classification samples, else None), the
    CLI object) of every chip of ``split``, in dataset order: the in-memory form of :func:`run_embed`."""
    import numpy as np
    import torch
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    if pooling == "none":
        raise ConfigError("one vector per chip needs pooling mean, max or cls", key="--pooling")
    cli, encoder, dataset, loader_args = _prepare(config_args, split, layers, batch_size)
    first = cli.datamodule.modalities[0]
    vectors, ids, targets = [], [], []
    with torch.no_grad():
        for batch in tqdm(DataLoader(dataset, **loader_args), desc=f"embed {split}", unit="batch"):
            vectors.append(_vectors(encoder(batch["image"]), layers, pooling).numpy())
            ids += [Path(f).stem for f in batch["filename"][first]]
            labels = batch.get("label")
            targets += labels.tolist() if labels is not None else [None] * len(batch["filename"][first])
    return np.concatenate(vectors), ids, targets, cli


def _check_layers(encoder: Any, layers: list[int]) -> None:
    depth = len(encoder.out_channels)
    bad = [i for i in layers if not -depth <= i < depth]
    if bad:
        raise ConfigError(f"layers {bad} do not exist: the backbone has {depth} (0..{depth - 1}, or -1 for the last)",
                          key="--layers")


def run_embed(config_args: list[str], split: str, layers: list[int], pooling: str, output: Path | None = None,
              batch_size: int | None = None) -> Path:
    import rasterio
    import torch
    from rasterio.transform import Affine
    from torch.utils.data import DataLoader, Subset
    from tqdm.auto import tqdm

    from terramind_ft.inference.writers import _write_geotiff

    if pooling not in POOLINGS:
        raise ConfigError(f"unknown pooling {pooling!r}; one of {', '.join(POOLINGS)}", key="--pooling")
    try:
        import pyarrow  # noqa: F401
        import pyproj  # noqa: F401
    except ImportError:
        if pooling != "none":
            raise ConfigError("GeoParquet output needs pyarrow and pyproj: pip install 'terramind-ft[embed]'",
                              key="--pooling") from None
    cli, encoder, dataset, loader_args = _prepare(config_args, split, layers, batch_size)
    output = Path(output) if output is not None else Path(cli.trainer.default_root_dir) / "embeddings"
    output.mkdir(parents=True, exist_ok=True)
    parts = output / "parts"
    parts.mkdir(exist_ok=True)
    done = _done_chips(parts) if pooling != "none" else {p.name[: -len("_embedding.tif")]
                                                         for p in output.glob("*_embedding.tif")}
    first = cli.datamodule.modalities[0]
    todo = [i for i, r in enumerate(dataset.records) if Path(r.files[first]).stem not in done]
    if len(done):
        print(f"embed: {len(done)} chip(s) already in {output}, {len(todo)} to go", flush=True)
    rows: list[dict[str, Any]] = []
    dim = None
    geo = None
    loader = DataLoader(Subset(dataset, todo), **loader_args)  # the chips not written yet
    with torch.no_grad():
        for batch in tqdm(loader, desc=f"embed {split}", unit="batch", disable=not todo):
            features = encoder(batch["image"])
            chosen = [features[i] for i in layers]
            files = list(batch["filename"][first])
            if pooling == "none":
                grid = tuple(features.grid)
                for b, path in enumerate(files):
                    tokens = torch.cat([c[b] for c in chosen], dim=-1)  # [N, layers*D], N = h*w image tokens
                    cube = tokens[: grid[0] * grid[1]].T.reshape(-1, *grid).float().numpy()
                    with rasterio.open(path) as src:
                        profile = src.profile.copy()
                        scale = Affine.scale(src.width / grid[1], src.height / grid[0])
                    profile.update(count=cube.shape[0], dtype="float32", width=grid[1], height=grid[0],
                                   transform=profile["transform"] * scale, nodata=None)
                    _write_geotiff(output / f"{Path(path).stem}_embedding.tif", profile, cube)
                continue
            vectors = _vectors(features, layers, pooling)
            dim = int(vectors.shape[1])
            for b, path in enumerate(files):
                with rasterio.open(path) as src:
                    bounds, crs = src.bounds, src.crs
                if geo is None:
                    geo = _geo_metadata(crs)
                rows.append({"chip_id": Path(path).stem, "file": str(path), "geometry": _wkb_polygon(*bounds),
                             "crs": crs.to_string() if crs else None, "embedding": vectors[b].tolist()})
            if len(rows) >= PART_ROWS:
                _write_part(parts, rows, dim, geo)
                rows = []
    if pooling == "none":
        print(f"embed: {len(dataset.records)} patch-embedding GeoTIFF(s) in {output}", flush=True)
        return output
    if rows:
        _write_part(parts, rows, dim, geo)
    return _join_parts(parts, output / "embeddings.parquet", len(dataset.records))


def _join_parts(parts: Path, target: Path, expected: int) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from terramind_ft.io import atomic_path

    tables = [pq.read_table(p) for p in sorted(parts.glob("part-*.parquet"))]
    table = pa.concat_tables(tables).sort_by("chip_id") if tables else None
    if table is None:
        raise ConfigError("no chip to embed in this split", key="--split")
    with atomic_path(target, suffix=".parquet") as tmp:
        pq.write_table(table, tmp)
    dims = table.schema.field("embedding").type.list_size
    print(f"embed: {table.num_rows} of {expected} chip(s), {dims} values each -> {target}", flush=True)
    return target


def parse_layers(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",")]
    except ValueError:
        raise ConfigError(f"--layers takes comma-separated integers, got {text!r}", key="--layers") from None


def add_embedding_arguments(parser: argparse.ArgumentParser, splits: tuple[str, ...], split: str,
                            poolings: tuple[str, ...] = POOLINGS) -> None:
    """--config, --split, --layers, --pooling: what embed and few-shot share."""
    parser.add_argument("--config", "-c", action="append", required=True, help="a training config (repeatable)")
    parser.add_argument("--split", default=split, choices=splits, help=f"which split's chips (default: {split})")
    parser.add_argument("--layers", default="-1",
                        help="comma-separated backbone layers to concatenate, negative from the end (default -1)")
    parser.add_argument("--pooling", default="mean", choices=poolings,
                        help="mean | max | cls (first token) over the tokens"
                             + (", or none (patch tokens as a GeoTIFF)" if "none" in poolings else ""))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="terramind-ft embed",
        description="TerraMind embeddings of every chip of a split: a GeoParquet row per chip (footprint, vector) "
                    "or, with --pooling none, a GeoTIFF of patch embeddings per chip. Resumable.")
    add_embedding_arguments(parser, ("train", "val", "test", "predict"), "predict")
    parser.add_argument("--output", "-o", type=Path, default=None,
                        help="output folder (default: <trainer.default_root_dir>/embeddings)")
    parser.add_argument("--batch-size", type=int, default=None, help="default: the data module's")
    args, overrides = parser.parse_known_args(argv)
    layers = parse_layers(args.layers)
    config_args = [a for c in args.config for a in ("--config", c)] + overrides
    run_embed(config_args, args.split, layers, args.pooling, args.output, args.batch_size)
    return 0
