"""``terramind-ft embed --config X.yaml``: TerraMind embeddings of every chip of a split, one row per chip.

The config is a training config (its data module and its task's backbone; ``backbone_pretrained`` and
``backbone_ckpt_path`` say which weights) or an embedding config (``EmbeddingTask``). ``--ckpt_path best``
(``last``, or a fitted task's ``.ckpt``) embeds with the fine-tuned backbone of that checkpoint instead: rebuilt
from the checkpoint's own backbone arguments, LoRA adapters merged, nothing downloaded. The file's metadata
(``terramind_ft:weights``) and the closing line say which weights made the vectors. For each chip the backbone
runs once (eval, no augmentation, so the result is deterministic); the chosen layers are pooled over the tokens
and concatenated:

* ``--pooling mean | max | cls`` (``cls``: the first token; TerraMind has no class token, so it is the first
  patch) -> ``<output>/embeddings.parquet``, GeoParquet 1.0: ``chip_id`` (the first modality's file stem),
  ``file``, ``geometry`` (the chip's footprint, WKB polygon in the source CRS, which the ``geo`` metadata holds as
  PROJJSON), ``crs`` and ``embedding`` (fixed-size float32 list, layers x dim);
* ``--per-modality``: one column ``embedding_<modality>`` per input (its tokens pooled before the backbone's
  merge) instead of ``embedding``;
* ``--pooling none`` -> ``<output>/<chip_id>_embedding.tif``: the patch tokens as a GeoTIFF of ``dim x layers``
  bands on the chip's token grid (one pixel per 16 x 16 patch, the chip's CRS and a transform scaled to it).

Large scenes: ``--tile PX`` reads every file as ``PX`` x ``PX`` tiles streamed from disk
(:class:`~terramind_ft.inference.tiles.SceneTiles`: one strip of ``PX`` rows in memory, standardised as the data
module does), one row (or GeoTIFF) per tile, ``chip_id`` ``<stem>_r<row>_c<col>`` and the tile's footprint; the
last row and column of tiles are aligned to the scene's edge.

Resumable: finished chips are written in parts (``<output>/parts/``, each atomically); a rerun skips the chips
already there, then the parts are joined into ``embeddings.parquet``. Needs ``pip install 'terramind-ft[embed]'``
(pyarrow, pyproj).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from terramind_ft.errors import ConfigError
from terramind_ft.inference.embeddings import (
    POOLINGS,
    EmbeddedChip,
    EmbeddingWriter,
    backbone_weights,
    check_options,
    chip_id_of,
    embedding_settings,
    join_parts,
    layer_vectors,
    prepare_encoder,
)


def backbone_of(task: Any) -> Any:
    """The backbone of a training task (``model.encoder``) or of an EmbeddingTask (``backbone``)."""
    return task.backbone if hasattr(task, "backbone") else task.model.encoder


def _prepare(config_args: list[str], split: str, layers: list[int], batch_size: int | None,
             per_modality: bool = False, ckpt: str | None = None) -> tuple[Any, Any, Any, Any]:
    """The CLI object, the backbone (eval), the split's dataset (no augmentation) and the loader's arguments.
    ``ckpt``: a fitted task checkpoint (or ``best`` / ``last`` of the config's run) whose fine-tuned backbone
    replaces the config's."""
    from terramind_ft.cli.app import build_cli
    from terramind_ft.data.transforms import Compose

    cli = build_cli(list(config_args), run=False, backbone_weights=ckpt is None)
    if ckpt is not None:
        from terramind_ft.tasks.fitted import fitted_backbone

        fitted, _ = fitted_backbone(cli.checkpoint_file(ckpt))
        if hasattr(cli.model, "backbone"):
            cli.model.backbone = fitted
        else:
            cli.model.model.encoder = fitted
    encoder = backbone_of(cli.model).eval()
    datamodule = cli.datamodule
    prepare_encoder(encoder, layers, per_modality, layers_key="--layers", per_modality_key="--per-modality")
    dataset = datamodule.make_dataset(split, transform=Compose([]))
    loader_args = {"batch_size": batch_size or datamodule.batch_size, "shuffle": False,
                   "num_workers": datamodule.num_workers}
    return cli, encoder, dataset, loader_args


def embed_split(config_args: list[str], split: str, layers: list[int], pooling: str = "mean",
                batch_size: int | None = None, ckpt: str | None = None) -> tuple[Any, list[str], list[Any], Any]:
    """(vectors [N, D] float32 numpy, chip ids, targets (``label`` of classification samples, else None), the
    CLI object) of every chip of ``split``, in dataset order: the in-memory form of :func:`run_embed`."""
    import numpy as np
    import torch
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    if pooling == "none":
        raise ConfigError("one vector per chip needs pooling mean, max or cls", key="--pooling")
    cli, encoder, dataset, loader_args = _prepare(config_args, split, layers, batch_size, ckpt=ckpt)
    first = cli.datamodule.modalities[0]
    vectors, ids, targets = [], [], []
    with torch.no_grad():
        for batch in tqdm(DataLoader(dataset, **loader_args), desc=f"embed {split}", unit="batch"):
            vectors.append(layer_vectors(encoder(batch["image"]), layers, pooling).numpy())
            ids += [chip_id_of(f) for f in batch["filename"][first]]
            labels = batch.get("label")
            targets += labels.tolist() if labels is not None else [None] * len(batch["filename"][first])
    return np.concatenate(vectors), ids, targets, cli


def _sample_names(dataset: Any, first: str) -> list[str]:
    """The ``filename`` of every sample, in order, without reading any: the records' files, or a torchgeo
    dataset's sample names."""
    if hasattr(dataset, "records"):
        return [str(r.files[first]) for r in dataset.records]
    return [dataset.sample_name(i) for i in range(len(dataset))]


def run_embed(config_args: list[str], split: str, layers: list[int], pooling: str, output: Path | None = None,
              batch_size: int | None = None, tile: int | None = None, per_modality: bool = False,
              ckpt: str | None = None) -> Path:
    import torch
    from torch.utils.data import DataLoader, Subset
    from tqdm.auto import tqdm

    check_options(pooling, per_modality, pooling_key="--pooling", per_modality_key="--per-modality")
    if tile is not None and tile < 16:
        raise ConfigError(f"must be at least 16 px (one patch), got {tile}", key="--tile")
    try:
        import pyarrow  # noqa: F401
        import pyproj  # noqa: F401
    except ImportError:
        if pooling != "none":
            raise ConfigError("GeoParquet output needs pyarrow and pyproj: pip install 'terramind-ft[embed]'",
                              key="--pooling") from None
    cli, encoder, dataset, loader_args = _prepare(config_args, split, layers, batch_size, per_modality, ckpt)
    output = Path(output) if output is not None else Path(cli.trainer.default_root_dir) / "embeddings"
    writer = EmbeddingWriter(output, layers, pooling, settings=embedding_settings(
        encoder, cli.datamodule, split, per_modality, tile))
    done = writer.done()
    first = cli.datamodule.modalities[0]
    with torch.no_grad():
        if tile is None:
            names = _sample_names(dataset, first)
            todo = [i for i, name in enumerate(names) if chip_id_of(name) not in done]
            if done:
                print(f"embed: {len(done)} chip(s) already in {output}, {len(todo)} to go", flush=True)
            loader = DataLoader(Subset(dataset, todo), **loader_args)  # the chips not written yet
            for batch in tqdm(loader, desc=f"embed {split}", unit="batch", disable=not todo):
                writer.add(encoder(batch["image"]), [EmbeddedChip.of_file(f) for f in batch["filename"][first]])
        else:
            if not hasattr(dataset, "records"):
                raise ConfigError("--tile reads georeferenced files; this data module's samples have none (a torchgeo "
                                  "dataset): leave --tile out", key="--tile")
            _embed_tiles(cli.datamodule, dataset.records, encoder, writer, done, tile, loader_args["batch_size"],
                         first, split)
    if pooling == "none":
        print(f"embed: {writer.count} new patch-embedding GeoTIFF(s), {len(writer.done())} in {output}", flush=True)
        return output
    writer.flush()
    return join_parts(writer.parts, output / "embeddings.parquet", None if tile else len(dataset),
                      backbone_weights(encoder))


def _embed_tiles(datamodule: Any, records: list[Any], encoder: Any, writer: EmbeddingWriter, done: set[str], tile: int,
                 batch_size: int, first: str, split: str) -> None:
    """Every record as ``tile`` x ``tile`` tiles streamed from disk (SceneTiles); one row per tile."""
    import torch
    from tqdm.auto import tqdm

    from terramind_ft.inference.tiles import SceneTiles, scene_sources

    for record in tqdm(records, desc=f"embed {split} (tiles of {tile} px)", unit="scene"):
        scene = scene_sources(datamodule.specs, record, getattr(datamodule, "no_data_replace", 0.0))
        tiles = SceneTiles(scene["sources"], tile, means=scene["means"], stds=scene["stds"],
                           band_indexes=scene["band_indexes"], nodata_fill=scene["nodata_fill"],
                           linear_to_db=scene["linear_to_db"], reference_modality=first)
        stem, path = Path(record.files[first]).stem, str(record.files[first])
        pending: list[Any] = []

        def run(batch: list[Any]) -> None:
            inputs = {m: torch.stack([t.inputs[m] for t in batch]) for m in batch[0].inputs}
            chips = [EmbeddedChip(f"{stem}_{t.tile_id}", path, t.bounds, t.crs,
                           tiles.transform @ _translation(t.col, t.row), t.width, t.height) for t in batch]
            writer.add(encoder(inputs), chips)

        for t in tiles:
            if f"{stem}_{t.tile_id}" in done:
                continue
            pending.append(t)
            if len(pending) == batch_size:
                run(pending)
                pending = []
        if pending:
            run(pending)


def _translation(col: int, row: int) -> Any:
    from rasterio.transform import Affine

    return Affine.translation(col, row)


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
                        help="mean | max | min | cls (first token) over the tokens"
                             + (", or none (patch tokens as a GeoTIFF)" if "none" in poolings else ""))
    parser.add_argument("--ckpt_path", "--ckpt-path", dest="ckpt_path", default=None, metavar="CKPT",
                        help="a fitted task checkpoint (best / last of the config's run, or a .ckpt file): embed with "
                             "its fine-tuned backbone (LoRA adapters merged) instead of the config's weights")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="terramind-ft embed",
        description="TerraMind embeddings of every chip of a split: a GeoParquet row per chip (footprint, vector) "
                    "or, with --pooling none, a GeoTIFF of patch embeddings per chip. Resumable.")
    add_embedding_arguments(parser, ("train", "val", "test", "predict"), "predict")
    parser.add_argument("--output", "-o", type=Path, default=None,
                        help="output folder (default: <trainer.default_root_dir>/embeddings)")
    parser.add_argument("--batch-size", type=int, default=None, help="default: the data module's")
    parser.add_argument("--tile", type=int, default=None, metavar="PX",
                        help="cut every file into PX x PX tiles streamed from disk, one row per tile (large scenes)")
    parser.add_argument("--per-modality", action="store_true",
                        help="one embedding column per input modality (embedding_<MOD>) instead of the merged one")
    args, overrides = parser.parse_known_args(argv)
    layers = parse_layers(args.layers)
    config_args = [a for c in args.config for a in ("--config", c)] + overrides
    run_embed(config_args, args.split, layers, args.pooling, args.output, args.batch_size, args.tile,
              args.per_modality, args.ckpt_path)
    return 0
