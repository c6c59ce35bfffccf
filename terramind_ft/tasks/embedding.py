"""EmbeddingTask: ``terramind-ft predict`` writes TerraMind embeddings instead of maps, from YAML.

.. code-block:: yaml

    model:
      class_path: EmbeddingTask
      init_args:
        backbone: terramind_v1_base
        backbone_kwargs: {pretrained: true, modalities: [S2L2A, S1GRD]}
        layers: [-1]
        pooling: mean          # mean | max | min | cls (first token) | none (patch tokens as GeoTIFFs)
        per_modality: false    # true: one embedding_<MOD> column per input instead of the merged one
        backbone_from: null    # a fitted task checkpoint: embed with its fine-tuned backbone instead

``terramind-ft predict --config embed.yaml`` then writes what ``terramind-ft embed`` writes
(:mod:`terramind_ft.commands.embed`): ``embeddings.parquet`` (GeoParquet, one row per chip: id, file, footprint,
CRS, fixed-size vector) or, with ``pooling: none``, ``<chip>_embedding.tif`` per chip, in ``output_dir`` (default
``<default_root_dir>/embeddings``); ``predictions.json`` maps each input to its GeoTIFF or to its row
(``.../embeddings.parquet#<chip_id>``). Chips already written there are not embedded again (a rerun continues);
the backbone runs in eval mode under ``no_grad`` at the trainer's precision (``--trainer.precision 32-true`` for
float32 numbers, as ``terramind-ft embed`` gives), so the numbers repeat.

A fine-tuned backbone: ``backbone_from: runs/x/checkpoints/best.ckpt`` (what ``predict --config embed.yaml
--ckpt_path best.ckpt`` sets when the checkpoint holds a segmentation, classification or regression task) embeds
with that checkpoint's backbone, rebuilt from the checkpoint's own backbone arguments with its LoRA adapters
merged (:func:`terramind_ft.tasks.fitted.fitted_backbone`); ``backbone`` and ``backbone_kwargs`` are then not
used (a notice says so where they name something else).

TerraTorch's ``EmbeddingGenerationTask`` arguments are accepted: ``model`` (= ``backbone``), ``model_args``
(= ``backbone_kwargs``), ``embedding_pooling`` (``null``/``keep`` = none, ``vit_mean`` / ``vit_max`` /
``vit_min`` / ``vit_cls``), ``output_format`` (``parquet``; ``tiff`` = patch tokens), ``output_dir``,
``has_cls`` (TerraMind has no class token: false or null), ``embed_file_key`` (file names come from the data
module: ``filename`` or ``file_id``); ``merge_method: dict`` in the backbone arguments means ``per_modality``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch

from terramind_ft.errors import ConfigError
from terramind_ft.registry import BACKBONE_REGISTRY

KEY = "model.init_args"
TERRATORCH_POOLING = {None: "none", "keep": "none", "None": "none", "vit_mean": "mean", "vit_max": "max",
                      "vit_min": "min", "vit_cls": "cls"}


def _fitted_backbone(path: str, name: str | None, kwargs: dict[str, Any]) -> torch.nn.Module:
    """The fine-tuned backbone of ``path``, with a notice where the config's backbone settings say otherwise."""
    from terramind_ft.cli.config import notice
    from terramind_ft.models.factory import backbone_arguments
    from terramind_ft.tasks.fitted import fitted_backbone

    encoder, model_args = fitted_backbone(path)
    fitted = model_args.get("backbone")
    if name and name != fitted:
        notice(f"{KEY}.backbone: the config says {name}, {path} holds a fine-tuned {fitted}; embedding with it")
    saved = backbone_arguments(model_args)
    differ = {k: v for k, v in kwargs.items() if k not in ("pretrained", "ckpt_path") and saved.get(k) != v}
    if differ:
        notice(f"{KEY}.backbone_kwargs {differ}: not used; the backbone of {path} is rebuilt from that checkpoint's "
               f"own arguments ({', '.join(f'{k}={saved.get(k)!r}' for k in differ)})")
    return encoder


class EmbeddingTask(pl.LightningModule):
    """Backbone embeddings of every predict chip (see the module docstring)."""

    predict_only = True  # the CLI refuses fit / validate / test before anything runs
    # ``predict --ckpt_path`` with a fitted task's checkpoint embeds with its backbone (backbone_from)
    embeds_fitted_checkpoints = True

    def __init__(
        self,
        backbone: str | None = None,
        backbone_kwargs: dict[str, Any] | None = None,
        layers: list[int] | None = None,
        pooling: str = "mean",
        per_modality: bool = False,
        output_dir: str | None = None,
        model: str | None = None,
        model_args: dict[str, Any] | None = None,
        embedding_pooling: str | None = "unset",
        output_format: str | None = None,
        has_cls: bool | None = None,
        embed_file_key: str = "filename",
        backbone_from: str | None = None,
    ):
        """
        Args:
            backbone: BACKBONE_REGISTRY name, e.g. terramind_v1_base (TerraTorch's ``model``).
            backbone_kwargs: its arguments: pretrained, ckpt_path, modalities, merge_method, ... (``model_args``).
            layers: backbone layers whose pooled tokens are concatenated, negative from the end (default [-1]).
            pooling: mean | max | min | cls (first token) | none (patch tokens written as GeoTIFFs).
            per_modality: one embedding column per input modality (its tokens before the backbone's merge).
            output_dir: where the embeddings go (default <default_root_dir>/embeddings).
            model, model_args, embedding_pooling, output_format, has_cls, embed_file_key: TerraTorch's
                EmbeddingGenerationTask names (module docstring).
            backbone_from: a fitted task checkpoint whose fine-tuned backbone embeds instead (module docstring).
        """
        super().__init__()
        from terramind_ft.inference.embeddings import check_options, prepare_encoder

        if model is not None and backbone is not None and model != backbone:
            raise ConfigError(f"backbone {backbone!r} and model {model!r} name two backbones; keep one",
                              key=f"{KEY}.backbone")
        name = backbone or model
        if not name and not backbone_from:
            raise ConfigError("name the backbone, e.g. backbone: terramind_v1_base", key=f"{KEY}.backbone")
        if backbone_kwargs is not None and model_args is not None:
            raise ConfigError("backbone_kwargs and model_args both given; keep one", key=f"{KEY}.backbone_kwargs")
        kwargs = dict(backbone_kwargs if backbone_kwargs is not None else model_args or {})
        if embedding_pooling != "unset":
            if embedding_pooling not in TERRATORCH_POOLING:
                raise ConfigError(f"unknown embedding_pooling {embedding_pooling!r}; one of "
                                  f"{', '.join(map(str, TERRATORCH_POOLING))}", key=f"{KEY}.embedding_pooling")
            pooling = TERRATORCH_POOLING[embedding_pooling]
        if output_format is not None:
            if output_format not in ("parquet", "tiff"):
                raise ConfigError(f"output_format is parquet or tiff, got {output_format!r}",
                                  key=f"{KEY}.output_format")
            if (output_format == "tiff") != (pooling == "none"):
                raise ConfigError("GeoTIFF output holds patch tokens (pooling none / embedding_pooling null); pooled "
                                  "vectors go to GeoParquet (output_format parquet)", key=f"{KEY}.output_format")
        if has_cls:
            raise ConfigError("TerraMind has no class token; has_cls: true cannot hold (cls pooling takes the first "
                              "patch token)", key=f"{KEY}.has_cls")
        if embed_file_key not in ("filename", "file_id"):
            raise ConfigError(f"chip ids come from the data module's file names; embed_file_key {embed_file_key!r} "
                              "has no meaning here (filename or file_id)", key=f"{KEY}.embed_file_key")
        if kwargs.get("merge_method") == "dict":
            per_modality = True
        keys = {"per_modality_key": f"{KEY}.per_modality"}
        check_options(pooling, per_modality, pooling_key=f"{KEY}.pooling", **keys)
        self.save_hyperparameters()
        if backbone_from:
            self.backbone = _fitted_backbone(str(backbone_from), name, kwargs)
        else:
            self.backbone = BACKBONE_REGISTRY.build(name, _key=f"{KEY}.backbone", **kwargs)
        self.backbone.requires_grad_(False)
        self.layers = list(layers) if layers is not None else [-1]
        prepare_encoder(self.backbone, self.layers, per_modality, layers_key=f"{KEY}.layers", **keys)
        self.pooling = pooling
        self.per_modality = bool(per_modality)
        self.output_dir = output_dir
        self._writer: Any = None
        self._done: set[str] = set()

    def forward(self, x: Any) -> Any:
        return self.backbone(x)

    def _output(self) -> Path:
        return Path(self.output_dir) if self.output_dir else Path(self.trainer.default_root_dir) / "embeddings"

    def on_predict_start(self) -> None:
        from terramind_ft.inference.embeddings import EmbeddingWriter, embedding_settings

        self.backbone.eval()
        rank = self.trainer.global_rank if self.trainer.world_size > 1 else None
        settings = embedding_settings(self.backbone, getattr(self.trainer, "datamodule", None), "predict",
                                      self.per_modality)
        self._writer = EmbeddingWriter(self._output(), self.layers, self.pooling,
                                       part_prefix=None if rank is None else f"rank{rank}-", settings=settings,
                                       key=f"{KEY}.output_dir")
        self._done = self._writer.done()

    @torch.no_grad()
    def predict_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> dict[str, Any]:
        from terramind_ft.inference.embeddings import EmbeddedChip, chip_id_of

        files = next(iter(batch["filename"].values()))
        reference = [str(f) for f in files]
        keep = [i for i, f in enumerate(reference) if chip_id_of(f) not in self._done]
        if keep:
            images = {m: v[keep] for m, v in batch["image"].items()}
            self._writer.add(self.backbone(images), [EmbeddedChip.of_file(reference[i]) for i in keep])
        out = self._output()
        # the manifest (predictions.json) says where each input went: its GeoTIFF, or its row of the table
        written = {ref: [str(out / f"{chip_id_of(ref)}_embedding.tif") if self.pooling == "none"
                         else f"{out / 'embeddings.parquet'}#{chip_id_of(ref)}"] for ref in reference}
        return {"written": written, "filename": batch["filename"]}

    def on_predict_epoch_end(self) -> None:
        from terramind_ft.inference.embeddings import backbone_weights, join_parts

        if self.pooling == "none":
            return
        self._writer.flush()
        self.trainer.strategy.barrier()
        if self.trainer.is_global_zero:
            join_parts(self._writer.parts, self._output() / "embeddings.parquet", None,
                       backbone_weights(self.backbone))

    def configure_optimizers(self) -> Any:  # nothing trains (the CLI refuses fit/validate/test: predict_only)
        return None
