"""``terramind-ft zero-shot --config X.yaml``: water maps from TerraMind's generated land cover, no training.

TerraMind generates ESRI land cover (LULC) from the inputs of a config's data module (S2 and/or S1); the
``--water-classes`` (default ``water``; e.g. ``water flooded_vegetation``) become water (1), every other class 0.
Per chip ``<output>/<stem>_water.tif`` (uint8 on the chip's grid, 255 where an input is nodata). Where the split
has labels, the binary map is scored against them with the test metrics (``test/IoU_<class>``, ``test/mIoU``,
``test/F1_Score``, ... under the data module's class names; label 1 = water) into ``<output>/metrics.json``.

The TerraMind paper's figure: 45.4 % water IoU on Sen1Floods11 zero-shot with TerraMind v1 base; that needs the
pretrained weights (``--pretrained``, the default: ``ibm-esa-geospatial/TerraMind-1.0-base`` and its LULC
tokenizer). With random weights (``--no-pretrained --allow-random-weights``) the maps mean nothing and are tagged
``TERRAMIND_FT_WEIGHTS=random``. Generation is greedy (temperature 0) so that runs repeat exactly. The inputs are
standardised as the data module does (its means/stds; by default TerraMind's pretraining statistics, which the
generation model expects). Chips are generated whole.

Large scenes: with ``--tile PX``, a file larger than ``PX`` in either direction is streamed from disk through
:func:`~terramind_ft.inference.scene.predict_scene` (``PX`` chips at a stride of 3/4 of it, blended; memory set
by the scene width, not its height), the water map written as it goes, and scored strip by strip against its
label. Pixels where an input is nodata are left out of the score (the map holds 255 there), in chips as in
scenes.
"""

from __future__ import annotations

import argparse
import re
import warnings
from pathlib import Path
from typing import Any

from terramind_ft.errors import ConfigError
from terramind_ft.modalities import LULC_CLASSES

STRIP_ROWS = 512  # rows of a streamed water map scored at once
TASK_WITHOUT_WEIGHTS = ["--model.init_args.model_args.backbone_pretrained=false"]


def water_map(lulc_probabilities: Any, water_ids: list[int]) -> Any:
    """[B, 10, H, W] LULC probabilities -> [B, H, W] int64: 1 where the most likely class is a water class."""
    import torch

    from terramind_ft.models.terramind.generation import lulc_class_map

    classes = lulc_class_map(lulc_probabilities)
    return torch.isin(classes, torch.tensor(water_ids, device=classes.device)).long()


def _water_ids(names: list[str]) -> list[int]:
    ids = []
    for name in names:
        if name.isdigit():
            ids.append(int(name))
        elif name in LULC_CLASSES:
            ids.append(LULC_CLASSES.index(name))
        else:
            raise ConfigError(f"{name!r} is not a LULC class; one of {', '.join(LULC_CLASSES)} or its index",
                              key="--water-classes")
    return ids


class WaterLogits:
    """``{modality: [b, C, h, w]}`` chips -> ``[b, 2, h, w]`` log-probabilities of (other, water): the largest
    non-water and the largest water class probability of the generated LULC, so that the argmax of the two is
    "the most likely class is a water class" (what :func:`water_map` says of a whole chip) and blending chips
    averages log-probabilities."""

    def __init__(self, model: Any, water_ids: list[int]):
        self.model, self.water_ids = model, water_ids

    def __call__(self, chips: dict[str, Any]) -> Any:
        import torch

        probabilities = self.model(chips)["LULC"]
        water = torch.zeros(probabilities.shape[1], dtype=torch.bool, device=probabilities.device)
        water[self.water_ids] = True
        pair = torch.stack([probabilities[:, ~water].amax(dim=1), probabilities[:, water].amax(dim=1)], dim=1)
        return pair.clamp_min(1e-12).log()


def _stream_scene(model: WaterLogits, dm: Any, dataset: Any, record: Any, output: Path, tile: int,
                  class_names: list[str], tags: dict[str, str], metrics: Any, ignore: int, device: Any) -> bool:
    """predict_scene over one large record, then its water map scored strip by strip; True when scored."""
    import numpy as np
    import rasterio
    import torch
    from rasterio.windows import Window

    from terramind_ft.data.raster import read_raster
    from terramind_ft.inference.geotiff import CLASS_NODATA
    from terramind_ft.inference.scene import predict_scene
    from terramind_ft.inference.tiles import scene_sources

    scene = scene_sources(dm.specs, record, getattr(dm, "no_data_replace", 0.0))
    first = dm.modalities[0]
    target = output / f"{Path(record.files[first]).stem}_water.tif"
    predict_scene(model, scene["sources"], target, means=scene["means"], stds=scene["stds"],
                  band_indexes=scene["band_indexes"], nodata_fill=scene["nodata_fill"],
                  linear_to_db=scene["linear_to_db"], crop=tile,
                  stride=max(16, tile * 3 // 4), batch_size=dm.batch_size, task="segmentation",
                  class_names=class_names, layout="gtiff", overviews=False, device=device, verbose=True,
                  reference_modality=first, tags=tags)
    label_path = record.label_file
    if not label_path:
        return False
    with rasterio.open(target) as src:
        for row in range(0, src.height, STRIP_ROWS):
            window = Window(0, row, src.width, min(STRIP_ROWS, src.height - row))
            water = src.read(1, window=window)
            data, invalid = read_raster(label_path, "label", bands=[0], window=window)
            label = dataset.label_values(data[0], invalid[0], label_path)
            label = np.where(water == CLASS_NODATA, ignore, label)
            metrics.update(torch.from_numpy(np.where(water == CLASS_NODATA, 0, water).astype(np.int64))[None],
                           torch.from_numpy(label)[None])
    return True


def _device_of(model: Any) -> Any:
    import torch

    param = next(iter(model.parameters()), None)
    return param.device if param is not None else torch.device("cpu")


def _larger_than(record: Any, dm: Any, tile: int) -> bool:
    import rasterio

    with rasterio.open(record.files[dm.modalities[0]]) as src:
        return src.height > tile or src.width > tile


def _size(model_args: dict[str, Any]) -> str:
    match = re.search(r"terramind_v1_(tiny|small|base|large)", str(model_args.get("backbone", "")))
    return match.group(1) if match else "base"


def main(argv: list[str] | None = None) -> int:
    import torch
    from torch.utils.data import DataLoader, Subset
    from tqdm.auto import tqdm

    from terramind_ft.cli.app import build_cli
    from terramind_ft.data.transforms import Compose
    from terramind_ft.inference.geotiff import WEIGHTS_TAG
    from terramind_ft.inference.writers import write_prediction
    from terramind_ft.io import atomic_write_json
    from terramind_ft.registry import FULL_MODEL_REGISTRY
    from terramind_ft.tasks.metrics import SegmentationMetrics

    parser = argparse.ArgumentParser(prog="terramind-ft zero-shot",
                                     description="Water maps from TerraMind's generated land cover, scored "
                                                 "against the split's labels where it has them.")
    parser.add_argument("--config", "-c", action="append", required=True, help="a config with a data module")
    parser.add_argument("--split", default="test", choices=("train", "val", "test", "predict"))
    parser.add_argument("--water-classes", nargs="+", default=["water"],
                        help=f"LULC classes that count as water (names or ids; {', '.join(LULC_CLASSES)})")
    parser.add_argument("--size", choices=("tiny", "small", "base", "large"), default=None,
                        help="TerraMind size (default: the config's backbone's, else base)")
    parser.add_argument("--pretrained", action=argparse.BooleanOptionalAction, default=True,
                        help="the official weights (default); --no-pretrained needs --allow-random-weights")
    parser.add_argument("--ckpt-path", help="a local TerraMind checkpoint instead of the download")
    parser.add_argument("--tokenizer-ckpt", help="a local LULC tokenizer checkpoint")
    parser.add_argument("--allow-random-weights", action="store_true")
    parser.add_argument("--output", "-o", type=Path, default=None,
                        help="folder of the maps and metrics.json (default: <trainer.default_root_dir>/zero_shot)")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--tile", type=int, default=None, metavar="PX",
                        help="stream files larger than PX from disk in PX chips (large scenes; default: whole chips)")
    args, overrides = parser.parse_known_args(argv)
    if args.tile is not None and args.tile < 32:
        raise ConfigError(f"must be at least 32 px, got {args.tile}", key="--tile")
    water_ids = _water_ids(args.water_classes)
    random_weights = not args.pretrained and not args.ckpt_path
    if random_weights and not args.allow_random_weights:
        raise ConfigError("--no-pretrained starts TerraMind from random weights, which maps nothing; drop it, give "
                          "--ckpt-path, or add --allow-random-weights for a smoke test", key="--pretrained")
    # The config's task is read for its data module and backbone size only: its pretrained weights are never
    # needed (and may not be downloadable here); the generator loads TerraMind's.
    cli = build_cli([a for c in args.config for a in ("--config", c)] + overrides + TASK_WITHOUT_WEIGHTS, run=False)
    dm = cli.datamodule
    size = args.size or _size(dict(getattr(cli.model, "hparams", {}).get("model_args") or {}))
    class_names = list(dm.class_names or ["not_water", "water"])
    if len(class_names) != 2:  # before the model is built: a config error should not wait for it
        raise ConfigError(f"zero-shot water mapping scores against 2-class labels (0 other, 1 water); the data "
                          f"module has {len(class_names)} classes", key="data.init_args.num_classes")
    tokenizer = ({"ckpt_path": args.tokenizer_ckpt, "pretrained": False} if args.tokenizer_ckpt
                 else {"pretrained": bool(args.pretrained)})
    with warnings.catch_warnings():
        if args.allow_random_weights:
            warnings.filterwarnings("ignore", message=".*random weights.*")
        model = FULL_MODEL_REGISTRY.build(
            f"terramind_v1_{size}_generate", modalities=list(dm.modalities), output_modalities=["LULC"],
            pretrained=bool(args.pretrained and not args.ckpt_path), ckpt_path=args.ckpt_path, standardize=False,
            temps=0.0, seed=0, tokenizer_kwargs={"LULC": tokenizer}).eval()
    dataset = dm.make_dataset(args.split, transform=Compose([]))
    large = [i for i, r in enumerate(dataset.records) if args.tile is not None and _larger_than(r, dm, args.tile)]
    chips = [i for i in range(len(dataset.records)) if i not in set(large)]
    loader = DataLoader(Subset(dataset, chips), batch_size=args.batch_size or dm.batch_size, shuffle=False,
                        num_workers=dm.num_workers)
    output = args.output or Path(cli.trainer.default_root_dir) / "zero_shot"
    output.mkdir(parents=True, exist_ok=True)
    # the label value scores skip: the data module's, or the -1 its dataset gives invalid labels without one
    ignore = dm.ignore_index if dm.ignore_index is not None else -1
    metrics = SegmentationMetrics(2, ignore, class_names)
    tags = {WEIGHTS_TAG: "random" if random_weights else "pretrained"}
    first, written, scored = dm.modalities[0], 0, False
    with torch.no_grad():
        for batch in tqdm(loader, desc=f"zero-shot {args.split}", unit="batch", disable=not chips):
            water = water_map(model(batch["image"])["LULC"], water_ids)
            nodata = batch.get("nodata")
            if "mask" in batch:
                mask = batch["mask"].long()
                if nodata is not None:  # no input, no claim: those pixels are nodata in the map too
                    mask = mask.masked_fill(nodata.bool(), ignore)
                metrics.update(water, mask)
                scored = True
            for b, path in enumerate(batch["filename"][first]):
                write_prediction(output / f"{Path(path).stem}_water.tif", water[b].to(torch.uint8), path,
                                 kind="class_map", class_names=class_names,
                                 nodata_mask=None if nodata is None else nodata[b].numpy(), tags=tags)
                written += 1
        for i in large:
            scored |= _stream_scene(WaterLogits(model, water_ids), dm, dataset, dataset.records[i], output,
                                    args.tile, class_names, tags, metrics, ignore, _device_of(model))
            written += 1
    doc: dict[str, Any] = {"zero_shot": {"split": args.split, "chips": written, "size": size,
                                         "water_classes": [LULC_CLASSES[i] for i in water_ids],
                                         "weights": tags[WEIGHTS_TAG]}}
    line = f"zero-shot: {written} water map(s) in {output}"
    if scored:
        values = {f"test/{k}": float(v) for k, v in metrics.compute().items()}
        doc["metrics"] = values
        water_name = class_names[1]
        line += (f"; IoU_{water_name} {values[f'test/IoU_{water_name}']:.3f}, mIoU {values['test/mIoU']:.3f} "
                 "(TerraMind v1 base with pretrained weights: water IoU 0.454 on Sen1Floods11, the paper's figure)")
    if random_weights:
        line += "; RANDOM WEIGHTS: these maps mean nothing"
    path = atomic_write_json(output / "metrics.json", doc, indent=1)
    print(f"{line} -> {path}", flush=True)
    return 0
