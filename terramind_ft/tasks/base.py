"""What every task shares: model assembly, loss, optimisation, freezing, NaN guard, validation previews.

Tasks take TerraTorch's arguments (``model_args``, ``model_factory``, ``loss``, ``ignore_index``,
``class_weights``, ``class_names``, ``lr``, ``optimizer``, ``optimizer_hparams``, ``scheduler``,
``scheduler_hparams``, ``lr_overrides``, ``freeze_backbone``, ``freeze_decoder``, ``freeze_head``,
``plot_on_val``, ``tiled_inference_parameters``, ``tiled_inference_on_validation``/``_testing``, ``aux_heads``,
``aux_loss``), so a TerraTorch config's ``model.init_args`` runs unchanged.

Auxiliary heads (``model_args.aux_decoders``, or the task's ``aux_heads``: TerraTorch accepts both): in training
the loss is the main head's plus ``aux_loss[name]`` times each auxiliary head's (same loss function and target),
logged as ``train/loss_aux_<name>``; validation, test and predict run the main head only.

Optimiser: ``optimizer`` is a ``torch.optim`` name (default AdamW) built with ``lr`` and
``optimizer_hparams``; ``scheduler`` a ``torch.optim.lr_scheduler`` name with ``scheduler_hparams``
(plus ``interval``: epoch|step and ``monitor``, default val/loss). ``lr_overrides`` ({substring of a
parameter name: lr}) puts matching parameters in their own group; it also applies when the optimiser comes
from LightningCLI's top-level ``optimizer:`` block (see :mod:`terramind_ft.cli.app`). Frozen parameters
get no gradient, so the optimiser never changes them.
"""

from __future__ import annotations

import logging
from pathlib import Path
from collections.abc import Mapping
from typing import Any

import lightning.pytorch as pl
import torch
from torch import nn

from terramind_ft.errors import ConfigError, DataError, TrainingError, did_you_mean
from terramind_ft.inference.tiling import TilingParameters, run_tiled
from terramind_ft.io import plain_hyperparameters
from terramind_ft.models.factory import MODEL_FACTORIES, build_model, without_weight_sources
from terramind_ft.ops import class_ids
from terramind_ft.registry import import_dotted
from terramind_ft.tasks import metrics as M
from terramind_ft.tasks.losses import build_custom_loss, build_loss

log = logging.getLogger(__name__)

PREVIEW_DIR = "previews"
# A standardised input this many standard deviations from the mean is a fill value or wrong units, not data.
EXTREME_STANDARDISED = 1e3


def _optim_class(name: str, module: Any, key: str) -> type:
    """A class from ``torch.optim`` (or its lr_scheduler module) by name or dotted path."""
    if "." in name:
        return import_dotted(name, key)
    choices = [n for n in dir(module) if n[:1].isupper()]
    if name not in choices:
        raise ConfigError(f"unknown {name!r}.{did_you_mean(name, choices)} Valid: {', '.join(choices)}", key=key)
    return getattr(module, name)


def _first_files(filenames: Any, n: int) -> list[str]:
    """The first ``n`` file names of a batch's ``filename`` entry (its first modality's)."""
    if isinstance(filenames, dict) and filenames:
        return [str(f) for f in list(next(iter(filenames.values())))[:n]]
    return []


def _first_sample(batch: Any) -> Any:
    """The first sample of a batch, keeping its structure (tensors, dicts, lists of file names)."""
    if isinstance(batch, torch.Tensor):
        return batch[:1] if batch.ndim else batch
    if isinstance(batch, dict):
        return {k: _first_sample(v) for k, v in batch.items()}
    if isinstance(batch, list):
        return batch[:1]
    return batch


# The checkpoint key naming the task class that wrote it (see BaseTask.on_save_checkpoint, task_class_path).
TASK_CLASS_KEY = "terramind_ft_task_class"


def task_class_path(checkpoint: Mapping[str, Any]) -> str | None:
    """The dotted class of the task a checkpoint holds: the CLI's ``hyper_parameters._class_path``, else the
    name every terramind-ft task writes (:data:`TASK_CLASS_KEY`); None for other checkpoints."""
    saved = checkpoint.get("hyper_parameters") or {}
    return saved.get("_class_path") or checkpoint.get(TASK_CLASS_KEY)


class BaseTask(pl.LightningModule):
    """Common base of SemanticSegmentationTask, ClassificationTask and PixelwiseRegressionTask."""

    task: str = ""
    target_key: str = "mask"  # batch key of the target
    # Init arguments that say how to run the model, not what its weights are: with ``--ckpt_path`` the config's
    # and the command line's values win over the checkpoint's (terramind_ft.cli.checkpoints.restore_plan).
    run_settings: tuple[str, ...] = ("tiled_inference_parameters", "tiled_inference_on_validation",
                                     "tiled_inference_on_testing", "plot_on_val", "test_dataloaders_names")

    def __init__(
        self,
        model_args: dict[str, Any] | None = None,
        model_factory: str = "EncoderDecoderFactory",
        model: nn.Module | None = None,
        loss: str | list[str] | dict[str, float] = "ce",
        custom_loss: bool = False,
        custom_loss_kwargs: dict[str, Any] | None = None,
        ignore_index: int | None = None,
        class_weights: list[float] | None = None,
        class_names: list[str] | None = None,
        lr: float = 1e-3,
        optimizer: str = "AdamW",
        optimizer_hparams: dict[str, Any] | None = None,
        scheduler: str | None = None,
        scheduler_hparams: dict[str, Any] | None = None,
        lr_overrides: dict[str, float] | None = None,
        freeze_backbone: bool = False,
        freeze_decoder: bool = False,
        freeze_head: bool = False,
        plot_on_val: bool | int = 4,
        tiled_inference_parameters: dict[str, Any] | None = None,
        tiled_inference_on_validation: bool = False,
        tiled_inference_on_testing: bool = False,
        aux_heads: list[dict[str, Any]] | None = None,
        aux_loss: dict[str, float] | None = None,
        test_dataloaders_names: list[str] | None = None,
    ):
        """See the class and module docs; --model.help <Task> lists every argument.

        Args:
            model_args: the model, as TerraTorch's EncoderDecoderFactory takes it: 'backbone' (e.g.
                terramind_v1_base), 'backbone_<arg>' (pretrained, modalities, bands, merge_method, ckpt_path, ...),
                'necks' (list of {name, args}), 'decoder' (UNetDecoder, UperNetDecoder, FCNDecoder,
                IdentityDecoder) and 'decoder_<arg>', 'head_<arg>', 'num_classes', 'rescale', 'padding'.
            model_factory: EncoderDecoderFactory (TerraTorch's name; the only factory).
            model: an already built nn.Module instead of model_args (Python use).
            loss: a loss name, a list (summed) or {name: weight}: segmentation ce, dice, focal, jaccard, lovasz;
                classification ce, focal; regression mse, mae, rmse, huber.
            custom_loss: ``loss`` is then the dotted path of a loss class of your own (TerraTorch's form), called
                as loss(output, target); regression gives it the valid pixels only.
            custom_loss_kwargs: the arguments that class is built with.
            ignore_index: label value ignored by loss and metrics.
            class_weights: one weight per class for the loss.
            class_names: names of the classes, in metric names (IoU_<name>), previews and GeoTIFF tags.
            lr: learning rate of the default optimiser (AdamW) and of lr_overrides-free parameters.
            optimizer: a torch.optim class name (or a top-level optimizer: block).
            optimizer_hparams: more arguments of the optimiser (weight_decay, betas, ...).
            scheduler: a torch.optim.lr_scheduler class name, e.g. ReduceLROnPlateau, CosineAnnealingLR.
            scheduler_hparams: its arguments, plus interval (epoch | step) and monitor (default val/loss).
            lr_overrides: {parameter-name substring: lr}, e.g. {model.encoder: 1e-5}.
            freeze_backbone: train only necks, decoder and head.
            freeze_decoder: freeze the necks and the decoder.
            freeze_head: freeze the head.
            plot_on_val: validation previews per epoch (0 = none).
            tiled_inference_parameters: {crop, stride, batch_size, ...}: predict (and val/test with the switches
                below) chip by chip; predict then streams scenes from disk.
            tiled_inference_on_validation: validation runs tiled too.
            tiled_inference_on_testing: test runs tiled too.
            aux_heads: auxiliary heads ({name, decoder, decoder_args}), the same as model_args.aux_decoders.
            aux_loss: {auxiliary head name: weight of its loss}, one per auxiliary head.
            test_dataloaders_names: names of the test loaders, in order: metrics become test/<name>/<metric> and
                metrics.json has a section per loader (the data module's test_sets name them too).
        """
        super().__init__()
        self.save_hyperparameters(ignore=["model"])
        plain_hyperparameters(self)  # paths as strings: checkpoints load with weights_only=True
        if model is None:
            if model_factory not in MODEL_FACTORIES:
                hint = did_you_mean(model_factory, MODEL_FACTORIES)
                raise ConfigError(f"unknown model_factory {model_factory!r}.{hint} Valid: {', '.join(MODEL_FACTORIES)}",
                                  key="model.init_args.model_factory")
            if not model_args:
                raise ConfigError("the task needs model_args (backbone, necks, decoder, ...) or a model",
                                  key="model.init_args.model_args")
            model_args = dict(model_args)
            if aux_heads is not None:
                if model_args.get("aux_decoders") is not None:
                    raise ConfigError("auxiliary heads are given twice, as aux_heads and as model_args.aux_decoders;"
                                      " keep one", key="model.init_args.aux_heads")
                model_args["aux_decoders"] = aux_heads
            model = build_model(self.task, model_args, key="model.init_args.model_args")
        self.model = model
        self.num_classes = None if self.task == "regression" else int((model_args or {}).get("num_classes") or 0)
        if class_names is not None and self.num_classes and len(class_names) != self.num_classes:
            raise ConfigError(f"{len(class_names)} class_names for num_classes={self.num_classes}",
                              key="model.init_args.class_names")
        self.class_names = [str(c) for c in (class_names or range(self.num_classes or 0))]
        self.ignore_index = ignore_index
        if custom_loss:
            self.loss_fn = build_custom_loss(loss, custom_loss_kwargs, self.task, ignore_index, class_weights)
        elif custom_loss_kwargs:
            raise ConfigError("custom_loss_kwargs without custom_loss: true; they build a loss class of your own",
                              key="model.init_args.custom_loss_kwargs")
        else:
            self.loss_fn = build_loss(loss, self.task, ignore_index, class_weights, self.num_classes)
        self.aux_loss = self._check_aux_loss(aux_loss)
        self.lr_overrides = dict(lr_overrides or {})
        self._check_lr_overrides()
        if freeze_backbone:
            self.model.freeze_encoder()
        if freeze_decoder:
            self.model.freeze_decoder()
        if freeze_head:
            self.model.freeze_head()
        self.plot_on_val = int(plot_on_val)
        self.tiling = None
        if tiled_inference_parameters is not None:
            if self.task == "classification":
                raise ConfigError("tiled inference needs a pixelwise task",
                                  key="model.init_args.tiled_inference_parameters")
            self.tiling = TilingParameters.from_mapping(tiled_inference_parameters,
                                                        key="model.init_args.tiled_inference_parameters")
        self.tiled_stages = {"predict"} | ({"val"} if tiled_inference_on_validation else set()) | (
            {"test"} if tiled_inference_on_testing else set())
        self.val_metrics = self.make_metrics()
        self.test_metrics = self.make_metrics()
        if test_dataloaders_names is not None and (not test_dataloaders_names or len(set(test_dataloaders_names))
                                                   != len(test_dataloaders_names)):
            raise ConfigError(f"test_dataloaders_names must be distinct names, got {test_dataloaders_names!r}",
                              key="model.init_args.test_dataloaders_names")
        self.test_loader_names: list[str] | None = list(test_dataloaders_names) if test_dataloaders_names else None
        self.test_metrics_by_loader = nn.ModuleList()  # one per named test loader (see setup)
        self._preview: dict[str, Any] | None = None

    def _check_aux_loss(self, aux_loss: dict[str, float] | None) -> dict[str, float]:
        """One weight per auxiliary head: a head without one would train nothing, a weight without a head would be
        a typo that changes nothing."""
        heads = list(getattr(self.model, "aux_heads", None) or {})
        weights = {str(k): float(v) for k, v in dict(aux_loss or {}).items()}
        for name in weights:
            if name not in heads:
                hint = did_you_mean(name, heads) or (" The model has no auxiliary heads." if not heads else "")
                raise ConfigError(f"aux_loss names {name!r}, which is no auxiliary head.{hint}",
                                  key=f"model.init_args.aux_loss.{name}")
        for name in heads:
            if name not in weights:
                raise ConfigError(f"auxiliary head {name!r} has no weight in aux_loss, so it would train nothing; add "
                                  f"aux_loss: {{{name}: 0.4}} (or remove the head)", key="model.init_args.aux_loss")
        return weights

    def setup(self, stage: str) -> None:
        """Before ``test``: one set of metrics per test loader when there are several (named by the task's
        test_dataloaders_names or the data module's test_sets)."""
        if stage != "test":
            return
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        from_data = getattr(datamodule, "test_loader_names", None)
        names = self.hparams.get("test_dataloaders_names")
        if names and from_data and list(names) != list(from_data):
            raise ConfigError(f"test_dataloaders_names {list(names)} and the data module's test_sets {from_data} name "
                              "the test loaders differently; keep one of them",
                              key="model.init_args.test_dataloaders_names")
        names = list(names or from_data or [])
        self.test_loader_names = names or None
        if len(names) != len(self.test_metrics_by_loader):
            self.test_metrics_by_loader = nn.ModuleList(self.make_metrics() for _ in names).to(self.device)

    def _test_stage(self, dataloader_idx: int) -> tuple[str, nn.Module]:
        """The log prefix (test or test/<name>) and the metrics of a test loader."""
        if not self.test_loader_names:
            if dataloader_idx:
                raise ConfigError("the data module gives several test loaders: name them with the task's "
                                  "test_dataloaders_names (or the data module's test_sets)",
                                  key="model.init_args.test_dataloaders_names")
            return "test", self.test_metrics
        if dataloader_idx >= len(self.test_loader_names):
            raise ConfigError(f"test loader {dataloader_idx} has no name: test_dataloaders_names lists "
                              f"{len(self.test_loader_names)} ({self.test_loader_names})",
                              key="model.init_args.test_dataloaders_names")
        return f"test/{self.test_loader_names[dataloader_idx]}", self.test_metrics_by_loader[dataloader_idx]

    # -- what subclasses provide -----------------------------------------------------------------------------
    def make_metrics(self) -> nn.Module:
        raise NotImplementedError

    def target(self, batch: dict[str, Any]) -> torch.Tensor:
        return batch[self.target_key]

    def predictions(self, output: torch.Tensor) -> torch.Tensor:
        """What metrics compare with the target: class ids (regression overrides: values)."""
        return class_ids(output, dim=1)

    def train_metric(self, output: torch.Tensor, target: torch.Tensor) -> tuple[str, torch.Tensor]:
        """The cheap per-step metric (:data:`metrics.TRAIN_STEP`): accuracy over the non-ignored targets."""
        valid = target != self.ignore_index if self.ignore_index is not None else torch.ones_like(target, dtype=bool)
        correct = (self.predictions(output) == target) & valid
        return M.TRAIN_STEP[self.task][1], correct.sum() / valid.sum().clamp_min(1)

    @property
    def monitor(self) -> tuple[str, str]:
        """(metric key, mode) the best checkpoint follows."""
        return M.MONITOR[self.task]

    def metric_names(self, stage: str) -> list[str]:
        return M.metric_names(self.task, stage, self.class_names, self.loss_fn.names)

    # -- forward / steps -------------------------------------------------------------------------------------
    @property
    def streams_predict(self) -> bool:
        """With tiled inference, predict streams each scene from its files (constant memory, the same pixels as
        in-memory tiling): the data module then yields file references (see terramind_ft.inference.scene)."""
        return self.tiling is not None

    def forward(self, x: torch.Tensor | dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model(x).output

    def infer(self, x: torch.Tensor | dict[str, torch.Tensor], stage: str) -> torch.Tensor:
        """Forward pass, chip by chip when tiled inference is configured for ``stage``."""
        if self.tiling is None or stage not in self.tiled_stages:
            return self(x)
        return run_tiled(self.forward, x, self.tiling)

    def _check_target(self, target: torch.Tensor, batch: dict[str, Any]) -> None:
        if self.num_classes is None:
            return
        valid = target if self.ignore_index is None else target[target != self.ignore_index]
        if valid.numel() and (valid.min() < 0 or valid.max() >= self.num_classes):
            files = batch.get("filename", {})
            raise DataError(f"labels outside 0..{self.num_classes - 1} (found {int(valid.min())}..{int(valid.max())})"
                            f" and not ignore_index={self.ignore_index}, in batch with files {files}; set "
                            "model.init_args.ignore_index to the nodata label or fix num_classes")

    def _shared_step(self, batch: dict[str, Any], stage: str, prefix: str | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Forward + loss of one batch of ``stage`` (train, val, test), logged under ``prefix`` (default: stage)."""
        prefix = prefix or stage
        target = self.target(batch)
        self._check_target(target, batch)
        aux_outputs: dict[str, torch.Tensor] = {}
        if stage == "train" and self.aux_loss:
            result = self.model(batch["image"])
            output, aux_outputs = result.output, result.auxiliary_heads
        else:
            output = self.infer(batch["image"], stage)
        loss, parts = self.loss_fn(output, target)
        parts = dict(parts) if len(parts) > 1 else {}  # one term: it is the loss itself
        for name, aux_output in aux_outputs.items():
            aux_value, _ = self.loss_fn(aux_output, target)
            parts[f"aux_{name}"] = aux_value
            loss = loss + self.aux_loss[name] * aux_value
        bs = target.shape[0]
        if stage != "train" and self.ignore_index is not None:
            # Weigh out the samples with no valid target, so that a split whose labels are all ignore_index
            # logs a NaN loss (0 / 0), never a 0 that a val/loss checkpoint would take for the best.
            bs = int((target != self.ignore_index).reshape(bs, -1).any(dim=1).sum())
        on_step = stage == "train"
        # add_dataloader_idx=False: several test loaders log under their own names (test/<name>/loss) instead of
        # Lightning's ".../dataloader_idx_<i>" suffixes
        self.log(f"{prefix}/loss", loss, on_step=on_step, on_epoch=True, prog_bar=True, batch_size=bs, sync_dist=True,
                 add_dataloader_idx=False)
        for name, value in parts.items():
            self.log(f"{prefix}/loss_{name}", value, on_step=on_step, on_epoch=True, batch_size=bs, sync_dist=True,
                     add_dataloader_idx=False)
        return loss, output, target

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        loss, output, target = self._shared_step(batch, "train")
        if not torch.isfinite(loss):
            raise TrainingError(self._nan_message(loss, batch, batch_idx))
        name, value = self.train_metric(output.detach(), target)
        self.log(f"train/{name}", value, on_step=True, on_epoch=True, batch_size=target.shape[0], sync_dist=True)
        return loss

    def _nan_message(self, loss: torch.Tensor, batch: dict[str, Any], batch_idx: int) -> str:
        where = f"at global step {self.global_step} (epoch {self.current_epoch}, batch {batch_idx})"
        bad = [m for m, x in batch["image"].items() if x.is_floating_point() and not torch.isfinite(x).all()]
        if bad:
            files = {m: batch.get("filename", {}).get(m) for m in bad}
            return (f"training loss is {loss.item()} {where}: input modality {', '.join(bad)} has NaN/inf values "
                    f"(files {files}); set the datamodule's no_data_replace or clean the rasters")
        extreme = []
        for m, x in batch["image"].items():
            if x.is_floating_point() and x.ndim == 4:
                peak = x.detach().abs().amax(dim=(0, 2, 3))
                extreme += [(m, int(c), float(peak[c])) for c in range(peak.numel()) if peak[c] > EXTREME_STANDARDISED]
        if extreme:
            where_bands = "; ".join(f"{m} band {c} reaches {v:.3g} standard deviations (files "
                                    f"{batch.get('filename', {}).get(m)})" for m, c, v in extreme[:4])
            return (f"training loss is {loss.item()} {where}: {where_bands}. Such values are fills or wrong units, not "
                    "measurements: declare the files' nodata, fix dataset_bands / means / stds, or clean the rasters")
        precision = getattr(self.trainer, "precision", "?")
        return (f"training loss is {loss.item()} {where} with finite inputs (precision {precision}); lower the "
                "learning rate, use precision bf16-mixed or 32-true instead of 16-mixed, or add gradient_clip_val")

    def _eval_step(self, batch: dict[str, Any], batch_idx: int, stage: str, dataloader_idx: int = 0) -> None:
        if self.trainer.sanity_checking:
            # The sanity check runs the validation code once before training, which is what catches its errors; one
            # sample at full size does that at a quarter of a batch's cost, so the first training step comes sooner.
            batch = _first_sample(batch)
        prefix, metrics = self._test_stage(dataloader_idx) if stage == "test" else (stage, self.val_metrics)
        _, output, target = self._shared_step(batch, stage, prefix)
        metrics.update(self.predictions(output), target)
        if stage == "val" and batch_idx == 0 and self.plot_on_val and not self.trainer.sanity_checking:
            n = self.plot_on_val
            sample: dict[str, Any] = {"image": {m: x[:n].detach().float().cpu() for m, x in batch["image"].items()}}
            sample[self.target_key] = target[:n].detach().cpu()
            if batch.get("nodata") is not None:
                sample["nodata"] = batch["nodata"][:n].detach().cpu()
            predicted = self.predictions(output[:n]).detach()
            self._preview = {"sample": sample, "prediction": predicted.cpu(),
                             "scores": self._sample_scores(predicted, target[:n].detach()),
                             "files": _first_files(batch.get("filename"), n)}

    def _sample_scores(self, predicted: torch.Tensor, target: torch.Tensor) -> list[str]:
        """One score per preview sample, for its title: accuracy over its valid pixels (RMSE for regression)."""
        scores = []
        for p, t in zip(predicted, target, strict=True):
            valid = torch.isfinite(t.float()) if self.task == "regression" else torch.ones_like(t, dtype=torch.bool)
            if self.ignore_index is not None:
                valid &= t != self.ignore_index
            if not valid.any():
                scores.append("no valid label")
            elif self.task == "regression":
                scores.append(f"RMSE {float(((p[valid] - t[valid]).float() ** 2).mean().sqrt()):.3g}")
            else:
                scores.append(f"accuracy {float((p[valid] == t[valid]).float().mean()):.2f}")
        return scores

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch, batch_idx, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step(batch, batch_idx, "test", dataloader_idx)

    def _log_epoch_metrics(self, metrics: nn.Module, stage: str) -> None:
        values = {f"{stage}/{k}": v for k, v in metrics.compute().items()}
        monitor = self.monitor[0]
        if monitor in values:  # the metric the best checkpoint follows is the one the progress bar shows
            self.log(monitor, values.pop(monitor), prog_bar=True, sync_dist=False)
        self.log_dict(values, sync_dist=False, add_dataloader_idx=False)
        metrics.reset()

    def on_validation_epoch_end(self) -> None:
        self._log_epoch_metrics(self.val_metrics, "val")
        if self._preview is not None:
            self._write_preview(self._preview)
            self._preview = None

    def on_test_epoch_end(self) -> None:
        if not self.test_loader_names:
            self._log_epoch_metrics(self.test_metrics, "test")
            return
        for name, metrics in zip(self.test_loader_names, self.test_metrics_by_loader, strict=True):
            self._log_epoch_metrics(metrics, f"test/{name}")

    # -- previews --------------------------------------------------------------------------------------------
    def _write_preview(self, preview: dict[str, Any]) -> None:
        """Input / label / prediction of the first validation samples -> <run>/previews/epoch<E>_<i>.png,
        drawn by the datamodule's ``plot`` when it has one."""
        if not self.trainer.is_global_zero:
            return
        from terramind_ft.data.plot import (  # matplotlib only when plotting
            plot_sample,
            save_figure,
        )

        sample, prediction = preview["sample"], preview["prediction"]
        datamodule = getattr(self.trainer, "datamodule", None)
        out_dir = Path(self.trainer.default_root_dir) / PREVIEW_DIR
        scores, files = preview.get("scores") or [], preview.get("files") or []
        for i in range(len(prediction)):
            name = Path(files[i]).stem if i < len(files) else f"validation sample {i}"
            score = f": {scores[i]}" if i < len(scores) else ""
            title = f"epoch {self.current_epoch}, {name}{score}"
            if callable(getattr(datamodule, "plot", None)):
                fig = datamodule.plot(sample, prediction, index=i, title=title)
            else:  # a datamodule without plot(): show the standardised inputs as they are
                mods = list(sample["image"])
                fig = plot_sample(sample, prediction, modalities=mods, rgb_modality=mods[0], rgb_indices=[0],
                                  means={m: [0.0] * x.shape[1] for m, x in sample["image"].items()},
                                  stds={m: [1.0] * x.shape[1] for m, x in sample["image"].items()},
                                  class_names=self.class_names, ignore_index=self.ignore_index, index=i, title=title)
            path = save_figure(fig, out_dir / f"epoch{self.current_epoch:03d}_{i}.png", dpi=80)
            self._send_preview(fig, path, i)

    def _send_preview(self, fig: Any, path: str, index: int) -> None:
        """The preview to each configured logger that takes images: TensorBoard (``add_figure``), MLflow (an
        artifact under ``previews/``), W&B / Neptune-style ``log_image``. CSV and no logger: the PNG file only."""
        tag = f"previews/sample_{index}"
        for logger in self.trainer.loggers:
            try:
                if hasattr(logger, "log_image"):
                    logger.log_image(key=tag, images=[path], step=self.global_step)
                    continue
                experiment = logger.experiment
                if hasattr(experiment, "add_figure"):  # TensorBoard's SummaryWriter
                    experiment.add_figure(tag, fig, global_step=self.global_step, close=False)
                elif hasattr(experiment, "log_artifact") and getattr(logger, "run_id", None):  # MlflowClient
                    experiment.log_artifact(logger.run_id, path, artifact_path="previews")
            except Exception as err:  # a logger's failure must not end the training; say it once per logger
                key = f"_preview_warned_{type(logger).__name__}"
                if not getattr(self, key, False):
                    setattr(self, key, True)
                    log.warning("notice: could not send validation previews to %s: %s", type(logger).__name__, err)

    # -- optimisation ----------------------------------------------------------------------------------------
    def _check_lr_overrides(self) -> None:
        names = [n for n, _ in self.named_parameters()]
        for sub in self.lr_overrides:
            if not any(sub in n for n in names):
                raise ConfigError(f"lr_overrides key {sub!r} matches no parameter name (names look like "
                                  f"{names[0]!r}, {names[-1]!r})", key=f"model.init_args.lr_overrides.{sub}")

    def optimizer_param_groups(self, *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        """Every parameter in groups: one per lr_overrides entry (first matching substring wins), then the rest
        (which takes the optimiser's lr). Frozen parameters are in the groups too, as in TerraTorch's tasks (and
        LightningCLI's ``model.parameters()``): they get no gradient, so no optimiser updates them or keeps state
        for them, and the optimiser state of a TerraTorch checkpoint has the same groups, so a run resumes."""
        groups: dict[str, list[nn.Parameter]] = {sub: [] for sub in self.lr_overrides}
        rest: list[nn.Parameter] = []
        for name, p in self.named_parameters():
            sub = next((s for s in self.lr_overrides if s in name), None)
            (groups[sub] if sub is not None else rest).append(p)
        out = [{"params": ps, "lr": self.lr_overrides[s], "name": f"lr_override:{s}"} for s, ps in groups.items() if ps]
        if rest:
            out.append({"params": rest, "name": "default"})
        return out

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path: Any, map_location: Any = None, hparams_file: Any = None,
                             strict: bool | None = None, weights_only: bool | None = None, **kwargs: Any) -> Any:
        """Lightning's ``load_from_checkpoint``, without fetching the pretrained backbone first: the checkpoint
        holds every weight, so a model fitted from ``backbone_pretrained: true`` loads offline (a cluster's
        compute node) and without re-downloading hundreds of MB it would overwrite at once. ``model_args`` given
        here are used as they are."""
        if "model_args" not in kwargs and isinstance(checkpoint_path, (str, Path)) and Path(checkpoint_path).is_file():
            saved = torch.load(checkpoint_path, map_location="cpu", weights_only=True, mmap=True)
            model_args = (saved.get("hyper_parameters") or {}).get("model_args")
            del saved
            if isinstance(model_args, Mapping):
                kwargs["model_args"] = without_weight_sources(model_args)
        return super().load_from_checkpoint(checkpoint_path, map_location=map_location, hparams_file=hparams_file,
                                            strict=strict, weights_only=weights_only, **kwargs)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # The task's class, also when it was trained from Python (trainer.fit(task)), where Lightning saves no
        # hyper_parameters._class_path: embed/few-shot --ckpt_path, merge-lora and predict --ckpt_path rebuild the
        # same task from the file alone. A key of its own: in the hyper-parameters it would reach __init__.
        checkpoint[TASK_CLASS_KEY] = f"{type(self).__module__}.{type(self).__qualname__}"

    def configure_optimizers(self) -> Any:
        hp = self.hparams
        opt_cls = _optim_class(hp.optimizer, torch.optim, "model.init_args.optimizer")
        opt = opt_cls(self.optimizer_param_groups(), lr=hp.lr, **dict(hp.optimizer_hparams or {}))
        if not hp.scheduler:
            return opt
        sched_hp = dict(hp.scheduler_hparams or {})
        interval = sched_hp.pop("interval", "epoch")
        monitor = sched_hp.pop("monitor", "val/loss")
        sched_cls = _optim_class(hp.scheduler, torch.optim.lr_scheduler, "model.init_args.scheduler")
        sched = sched_cls(opt, **sched_hp)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": interval, "monitor": monitor}}

