"""Embeddings on disk: GeoParquet rows (one per chip: id, file, footprint, fixed-size vectors) or patch-embedding
GeoTIFFs, written in resumable parts. Shared by ``terramind-ft embed`` and the ``EmbeddingTask``.

A chip is a file, a tile of a scene, or a sample without a file (a torchgeo dataset's, no footprint). Pooled
vectors (``mean``, ``max``, ``min``, ``cls`` = the first token; TerraMind has no class token) go to
``<output>/parts/part-*.parquet``, each written atomically, then :func:`join_parts` makes ``embeddings.parquet``
(GeoParquet 1.0: ``chip_id``, ``file``, ``geometry`` WKB in the source CRS, given as PROJJSON in the ``geo``
metadata, ``crs``, and ``embedding`` or one ``embedding_<modality>`` per input). ``none`` writes
``<chip_id>_embedding.tif``: the patch tokens on the chip's token grid. :meth:`EmbeddingWriter.done` lists the chips
already written, so a rerun skips them.
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from terramind_ft.errors import ConfigError

POOLINGS = ("mean", "max", "min", "cls", "none")
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


def check_options(pooling: str, per_modality: bool, *, pooling_key: str, per_modality_key: str) -> None:
    """A known pooling, and per-modality only for pooled vectors (``embed`` and the EmbeddingTask, each naming
    its own option keys)."""
    if pooling not in POOLINGS:
        raise ConfigError(f"unknown pooling {pooling!r}; one of {', '.join(POOLINGS)}", key=pooling_key)
    if per_modality and pooling == "none":
        raise ConfigError(f"per-modality embeddings are pooled vectors; {pooling_key} none writes the merged patch "
                          "tokens (set the backbone's merge_method for another merge)", key=per_modality_key)


def prepare_encoder(encoder: Any, layers: list[int], per_modality: bool, *, layers_key: str,
                    per_modality_key: str) -> None:
    """Check that ``layers`` exist and, for per-modality embeddings, make the backbone return each input
    modality's tokens before they are merged (``merge_method: dict``)."""
    depth = len(getattr(encoder, "out_channels", []) or [])  # 0: the backbone does not list its layers
    bad = [i for i in layers if depth and not -depth <= i < depth]
    if bad:
        raise ConfigError(f"layers {bad} do not exist: the backbone has {depth} (0..{depth - 1}, or -1 for the last)",
                          key=layers_key)
    if per_modality:
        if not hasattr(encoder, "merge_method"):
            raise ConfigError(f"per-modality embeddings need a TerraMind backbone; {type(encoder).__name__} has "
                              "no per-modality tokens", key=per_modality_key)
        encoder.merge_method = "dict"


def backbone_weights(encoder: Any) -> str:
    """Where a TerraMind backbone's weights came from: ``checkpoint <source>``, or ``random (init <digest>)``
    when it loaded none. The digest tells random initialisations apart (another seed gives other vectors, so a
    rerun into the same embeddings folder must not count as the same weights)."""
    if not hasattr(encoder, "load_report"):
        return "unknown"
    report = encoder.load_report
    if report is not None:
        return f"checkpoint {getattr(report, 'source', '') or 'pretrained'}"
    return f"random (init {_init_digest(encoder)})"


def _init_digest(module: Any) -> str:
    """8 hex digits over the first and last floating-point parameters: cheap, and two seeds never share them."""
    params = [p for p in module.parameters() if p.is_floating_point()]
    digest = hashlib.sha1(str(len(params)).encode())
    for p in params[:1] + params[-1:]:
        digest.update(p.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:8]


def pool(tokens: Any, how: str) -> Any:
    """[B, N, D] -> [B, D]."""
    if how == "mean":
        return tokens.mean(dim=1)
    if how == "max":
        return tokens.amax(dim=1)
    if how == "min":
        return tokens.amin(dim=1)
    return tokens[:, 0]


WEIGHTS_KEY = b"terramind_ft:weights"  # GeoParquet schema metadata: which weights made the vectors


def _done_chips(parts: Path) -> set[str]:
    import pyarrow.parquet as pq

    done: set[str] = set()
    for part in sorted(parts.glob("part-*.parquet")):
        done.update(pq.read_table(part, columns=["chip_id"]).column("chip_id").to_pylist())
    return done


def _write_part(parts: Path, rows: list[dict[str, Any]], dims: dict[str, int], geo: dict[str, Any],
                prefix: str = "") -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from terramind_ft.io import atomic_path

    schema = pa.schema([("chip_id", pa.string()), ("file", pa.string()), ("geometry", pa.binary()),
                        ("crs", pa.string()), *((name, pa.list_(pa.float32(), dim)) for name, dim in dims.items())],
                       metadata={b"geo": json.dumps(geo).encode()})
    table = pa.Table.from_pylist(rows, schema=schema)
    index = len(list(parts.glob(f"part-{prefix}*.parquet")))
    with atomic_path(parts / f"part-{prefix}{index:05d}.parquet", suffix=".parquet") as tmp:
        pq.write_table(table, tmp)


def _geo_metadata(crs: Any) -> dict[str, Any]:
    return {"version": "1.0.0", "primary_column": "geometry",
            "columns": {"geometry": {"encoding": "WKB", "geometry_types": ["Polygon"], "crs": _projjson(crs)}}}


def layer_vectors(features: Any, layers: list[int], pooling: str) -> Any:
    """One vector per sample: each chosen layer pooled over its tokens, the layers concatenated; for per-modality
    features (``merge_method: dict``) ``{modality: vectors}``."""
    import torch

    if isinstance(features[layers[0]], dict):
        return {name: torch.cat([pool(features[i][name], pooling) for i in layers], dim=-1).float()
                for name in features[layers[0]]}
    return torch.cat([pool(features[i], pooling) for i in layers], dim=-1).float()


@dataclass
class EmbeddedChip:
    """Where one embedded chip (a file, or a tile of a scene) lies: its id, file, bounds, CRS and pixel grid.
    A sample without a file (a torchgeo dataset's) has no footprint: bounds, CRS and transform are None."""

    chip_id: str
    file: str
    bounds: tuple[float, float, float, float] | None
    crs: Any
    transform: Any
    width: int
    height: int

    @classmethod
    def of_file(cls, path: str) -> EmbeddedChip:
        import rasterio

        if not Path(path).is_file():  # "<dataset>/<split>/<index>" of a torchgeo sample
            return cls(chip_id_of(path), str(path), None, None, None, 0, 0)
        with rasterio.open(path) as src:
            return cls(chip_id_of(path), str(path), tuple(src.bounds), src.crs, src.transform, src.width, src.height)


def chip_id_of(name: str) -> str:
    """A file's stem; a file-less sample name ``EuroSAT/test/000003`` -> ``EuroSAT_test_000003``."""
    return Path(name).stem if Path(name).is_file() else name.strip("/").replace("/", "_")


SETTINGS_FILE = "embedding_settings.json"


def embedding_settings(encoder: Any, datamodule: Any, split: str, per_modality: bool,
                       tile: int | None = None) -> dict[str, Any]:
    """What makes the vectors besides layers and pooling: the weights, the inputs, the split, per-modality
    columns and the tile size (``embed`` and the ``EmbeddingTask`` record the same, so either continues the other's
    run)."""
    return {"weights": backbone_weights(encoder), "modalities": list(getattr(datamodule, "modalities", None) or []),
            "split": split, "per_modality": bool(per_modality), "tile": tile}


def claim_output(output: Path, settings: dict[str, Any], key: str) -> None:
    """Record what makes this folder's embeddings (``embedding_settings.json``), or refuse a folder that holds
    embeddings made otherwise. A rerun skips the chips already written, so without this check a rerun with other
    weights, pooling, layers or inputs would silently keep the old vectors (and label them with the new settings).
    """
    from terramind_ft.io import atomic_write_json

    record = output / SETTINGS_FILE
    settings = json.loads(json.dumps(settings))  # as JSON gives it back: lists, not tuples
    if record.is_file():
        saved = json.loads(record.read_text())
        differ = {k: (saved.get(k), v) for k, v in settings.items() if saved.get(k) != v}
        if differ:
            said = "; ".join(f"{k}: {old!r} there, {new!r} now" for k, (old, new) in differ.items())
            raise ConfigError(f"{output} holds embeddings made with other settings ({said}). A rerun continues only "
                              f"the same run: give another output folder, or delete {output} to start over", key=key)
        return
    if any(output.glob("parts/part-*.parquet")) or any(output.glob("*_embedding.tif")):
        raise ConfigError(f"{output} holds embeddings without a record of how they were made ({SETTINGS_FILE}); "
                          f"give another output folder, or delete {output} to start over", key=key)
    output.mkdir(parents=True, exist_ok=True)
    atomic_write_json(record, settings)


class EmbeddingWriter:
    """Embeddings of chips -> GeoParquet parts (pooled vectors; one ``embedding_<modality>`` column per input with
    per-modality features) or patch-embedding GeoTIFFs (``none``)."""

    def __init__(self, output: Path, layers: list[int], pooling: str, part_prefix: str | None = None,
                 settings: dict[str, Any] | None = None, key: str = "--output"):
        """``settings``: what else makes the vectors (weights, inputs, split, per-modality, tiles). A rerun into
        the same folder continues only with the same settings and layers/pooling; see :func:`claim_output`."""
        self.output, self.layers, self.pooling = output, layers, pooling
        self.part_prefix = part_prefix or ""  # per rank under DDP: two ranks never write the same part
        self.parts = output / "parts"
        claim_output(output, {"layers": list(layers), "pooling": pooling, **(settings or {})}, key)
        self.parts.mkdir(parents=True, exist_ok=True)
        self.rows: list[dict[str, Any]] = []
        self.dim: dict[str, int] = {}
        self.geo: dict[str, Any] | None = None
        self.count = 0

    def done(self) -> set[str]:
        if self.pooling == "none":
            return {p.name[: -len("_embedding.tif")] for p in self.output.glob("*_embedding.tif")}
        return _done_chips(self.parts)

    def add(self, features: Any, chips: list[EmbeddedChip]) -> None:
        import torch
        from rasterio.transform import Affine

        from terramind_ft.inference.writers import _write_geotiff

        self.count += len(chips)
        if self.pooling == "none":
            if any(chip.transform is None for chip in chips):
                raise ConfigError("patch embeddings are written as GeoTIFFs on the chip's grid; these samples have no "
                                  "georeferenced file (a torchgeo dataset): use --pooling mean, max, min or cls",
                                  key="--pooling")
            grid = tuple(features.grid)
            chosen = [features[i] for i in self.layers]
            for b, chip in enumerate(chips):
                tokens = torch.cat([c[b] for c in chosen], dim=-1)  # [N, layers*D], N = h*w image tokens
                cube = tokens[: grid[0] * grid[1]].T.reshape(-1, *grid).float().numpy()
                profile = dict(driver="GTiff", count=cube.shape[0], dtype="float32", width=grid[1], height=grid[0],
                               crs=chip.crs, transform=chip.transform @ Affine.scale(chip.width / grid[1],
                                                                                     chip.height / grid[0]))
                _write_geotiff(self.output / f"{chip.chip_id}_embedding.tif", profile, cube)
            return
        vectors = layer_vectors(features, self.layers, self.pooling)
        columns = {f"embedding_{k}": v for k, v in vectors.items()} if isinstance(vectors, dict) else \
            {"embedding": vectors}
        self.dim = {name: int(v.shape[1]) for name, v in columns.items()}
        for b, chip in enumerate(chips):
            if self.geo is None:
                self.geo = _geo_metadata(chip.crs)
            footprint = _wkb_polygon(*chip.bounds) if chip.bounds is not None else None
            self.rows.append({"chip_id": chip.chip_id, "file": chip.file, "geometry": footprint,
                              "crs": chip.crs.to_string() if chip.crs else None,
                              **{name: v[b].tolist() for name, v in columns.items()}})
        if len(self.rows) >= PART_ROWS:
            self.flush()

    def flush(self) -> None:
        if self.rows:
            _write_part(self.parts, self.rows, self.dim, self.geo, self.part_prefix)
            self.rows = []


def join_parts(parts: Path, target: Path, expected: int | None, weights: str | None = None) -> Path:
    """The parts as one GeoParquet file, sorted by chip; ``weights`` (:func:`backbone_weights`) goes into its
    metadata (``terramind_ft:weights``) and the closing line, so a file of random-weight vectors says so."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from terramind_ft.io import atomic_path

    tables = [pq.read_table(p) for p in sorted(parts.glob("part-*.parquet"))]
    table = pa.concat_tables(tables).sort_by("chip_id") if tables else None
    if table is None:
        raise ConfigError("no chip to embed in this split", key="--split")
    if weights is not None:
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), WEIGHTS_KEY: weights.encode()})
    with atomic_path(target, suffix=".parquet") as tmp:
        pq.write_table(table, tmp)
    dims = " + ".join(str(f.type.list_size) for f in table.schema if f.name.startswith("embedding"))
    counted = f"{table.num_rows} of {expected} chip(s)" if expected is not None else f"{table.num_rows} chip(s)"
    made = ""
    if weights is not None and weights.startswith("random"):
        made = f"; RANDOM WEIGHTS ({weights}): not TerraMind's embeddings"
    elif weights not in (None, "unknown"):
        made = f"; weights: {weights}"
    print(f"embed: {counted}, {dims} values each{made} -> {target}", flush=True)
    return target
