"""Encoder–decoder assembly from TerraTorch-style ``model_args`` (``EncoderDecoderFactory``).

``model_args`` as TerraTorch users write them (``terramind-ft fit --help`` prints this list)::

    backbone: terramind_v1_base          # terramind_v1_{tiny,small,base,large}[_tim] (BACKBONE_REGISTRY) or a module
    backbone_pretrained: true            # backbone_<x>: the backbone's argument <x>; or backbone_kwargs: {x: ...}
    backbone_modalities: [S2L1C, S1GRD]  # the inputs, by catalogue name; backbone_bands, backbone_ckpt_path, ...
    necks: [{name: SelectIndices, indices: [2, 5, 8, 11]}, {name: ReshapeTokensToImage}]  # applied in order
    decoder: UNetDecoder                 # UNetDecoder | UperNetDecoder | FCNDecoder | IdentityDecoder | MLPDecoder
                                         # | LinearDecoder (its own head: decoder_upsampling_size: 16, no head_*)
    decoder_channels: [512, 256, 128, 64]  # decoder_<x>: the decoder's argument <x>; or decoder_kwargs: {x: ...}
    head_dropout: 0.1                    # head_<x>: the head's argument <x>; or head_kwargs: {x: ...}
    num_classes: 2                       # classes of segmentation and classification (not regression)
    rescale: true                        # resize the output to the input size (pixel tasks)
    padding: reflect                     # how inputs are padded to a multiple of twice the patch size
    peft_config: {method: LORA, replace_qkv: qkv, peft_config_kwargs: {r: 16}}  # adapters (models/peft.py)
    aux_decoders: [{name: aux, decoder: FCNDecoder, decoder_args: {}}]  # trained with aux_loss, not at inference
    backbone_use_temporal: true          # [B, C, T, H, W] inputs through the backbone date by date (models/temporal.py)
    backbone_temporal_pooling: mean      # mean | max | concat | diff over the dates
    backbone_temporal_n_timestamps: 3    # the number of dates

Every argument must be used: an unknown or misspelt key is a :class:`ConfigError` naming it (with "did you
mean"). Inputs whose size is not a multiple of twice the backbone's patch size (an even token grid) are
padded, split between both sides as TerraTorch does, and the output is cropped back to the input size.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from terramind_ft.errors import ConfigError, check_known_keys, did_you_mean
from terramind_ft.models.necks import build_necks
from terramind_ft.registry import BACKBONE_REGISTRY, DECODER_REGISTRY, HEAD_REGISTRY, accepted_kwargs

TASKS = ("segmentation", "classification", "regression")
HEAD_FOR_TASK = {"segmentation": "SegmentationHead", "classification": "ClassificationHead",
                 "regression": "RegressionHead"}
DEFAULT_DECODER = {"segmentation": "UNetDecoder", "classification": "IdentityDecoder",
                   "regression": "UNetDecoder"}
# Plain (un-prefixed) keys of model_args.
MODEL_KEYS = ("backbone", "backbone_kwargs", "necks", "decoder", "num_classes", "rescale", "padding", "peft_config",
              "aux_decoders")
AUX_KEYS = ("name", "decoder", "decoder_args")
# backbone_<these>: TerraTorch's TemporalWrapper around the backbone (models/temporal.py), not backbone arguments.
TEMPORAL_KEYS = ("use_temporal", "temporal_pooling", "temporal_n_timestamps")
PADDING_MODES = ("reflect", "replicate", "constant")


@dataclass
class ModelOutput:
    """What every model returns: ``output`` (logits or values) and, in training, the auxiliary heads' outputs
    by name (TerraTorch's field name)."""

    output: torch.Tensor
    auxiliary_heads: dict[str, torch.Tensor] = field(default_factory=dict)


class AuxiliaryHead(nn.Sequential):
    """An extra decoder + head on the neck features; its loss trains the encoder alongside the main head's.

    A sequence of the two (``aux_heads.<name>.0`` the decoder, ``.1`` the head): TerraTorch's parameter names."""

    def __init__(self, decoder: nn.Module, head: nn.Module):
        super().__init__(decoder, head)


class EncoderDecoderModel(nn.Module):
    """backbone -> necks -> decoder -> head, with padding to an even token grid and crop/rescale back.

    Submodules ``encoder``, ``neck``, ``decoder``, ``head``, ``aux_heads``: TerraTorch's names, so a checkpoint of
    either tool holds the same parameter names for the same config.
    """

    def __init__(self, task: str, backbone: nn.Module, necks: nn.Module, decoder: nn.Module, head: nn.Module,
                 rescale: bool = True, padding: str = "reflect", aux_heads: Mapping[str, nn.Module] | None = None):
        super().__init__()
        self.task = task
        # registered in TerraTorch's order: parameters() then lists them as its models do, so the optimiser
        # state of a TerraTorch checkpoint lines up with ours and its run resumes here
        self.encoder = backbone
        self.decoder = decoder
        self.head = head
        self.aux_heads = nn.ModuleDict(dict(aux_heads or {}))
        self.neck = necks
        self.rescale = rescale
        self.padding = padding
        self.patch_size = int(getattr(backbone, "patch_size", 16) or 16)
        # The convolutions after the backbone run in channels-last layout (oneDNN's and cuDNN's native one):
        # the UNet decoder's forward + backward takes 0.28 s instead of 0.37 s per Sen1Floods11 step (bf16, 512 px,
        # 2-core CPU). Weights in that layout are enough: every conv output follows them; values are unchanged.
        for part in (self.neck, self.decoder, self.head, self.aux_heads):
            part.to(memory_format=torch.channels_last)

    # -- padding ---------------------------------------------------------------------------------------------
    @staticmethod
    def _image_size(x: torch.Tensor | dict[str, torch.Tensor]) -> tuple[int, int]:
        tensors = list(x.values()) if isinstance(x, dict) else [x]
        for t in tensors:
            if t.is_floating_point() and t.ndim >= 4:
                return int(t.shape[-2]), int(t.shape[-1])
        raise ValueError("model input has no [B, C, H, W] float tensor to take the image size from")

    def padding_for(self, size: tuple[int, int]) -> tuple[int, int, int, int]:
        """(top, bottom, left, right) padding of an input of ``size``: to a multiple of twice the patch size, so
        the token grid is even (the pyramid necks halve and double it), split evenly with the extra pixel at the
        bottom/right. TerraTorch pads the same way, so the same input gives the same output in either tool."""
        multiple = 2 * self.patch_size
        pad_h, pad_w = (-size[0]) % multiple, (-size[1]) % multiple
        return pad_h // 2, pad_h - pad_h // 2, pad_w // 2, pad_w - pad_w // 2

    def _pad(self, t: torch.Tensor, pads: tuple[int, int, int, int]) -> torch.Tensor:
        if not any(pads) or not t.is_floating_point() or t.ndim < 4:
            return t  # token-id modalities are given on the token grid and are not padded
        top, bottom, left, right = pads
        mode = self.padding
        if mode == "reflect" and (max(top, bottom) >= t.shape[-2] or max(left, right) >= t.shape[-1]):
            mode = "replicate"  # reflect needs the pad to be smaller than the image
        shape = t.shape
        flat = t.reshape(-1, *shape[-3:]) if t.ndim > 4 else t  # temporal inputs: pad each frame
        flat = F.pad(flat, (left, right, top, bottom), mode=mode)
        return flat.reshape(*shape[:-2], *flat.shape[-2:])

    def forward(self, x: torch.Tensor | dict[str, torch.Tensor]) -> ModelOutput:
        size = self._image_size(x)
        pads = self.padding_for(size)
        x = {k: self._pad(v, pads) for k, v in x.items()} if isinstance(x, dict) else self._pad(x, pads)
        return self.decode(self.encoder(x), size)

    def decode(self, features: Any, size: tuple[int, int]) -> ModelOutput:
        """Necks, decoder and head on the encoder's ``features`` of a padded input whose unpadded size is
        ``size``; pixel outputs come back at ``size``."""
        top, bottom, left, right = self.padding_for(size)
        padded = (size[0] + top + bottom, size[1] + left + right)
        grid = tuple(getattr(features, "grid", None) or (padded[0] // self.patch_size, padded[1] // self.patch_size))
        features = self.neck(list(features), grid)
        out = self._to_input_size(self.head(self.decoder(features)), size, padded)
        # Auxiliary heads only train: at inference they would be work whose result nobody reads.
        aux = {name: self._to_input_size(head(features), size, padded)
               for name, head in self.aux_heads.items()} if self.training else {}
        return ModelOutput(out, aux)

    def _to_input_size(self, out: torch.Tensor, size: tuple[int, int], padded: tuple[int, int]) -> torch.Tensor:
        """Pixel outputs at the padded input size (``rescale``), the padding cropped off again."""
        if self.task == "classification":
            return out
        if out.shape[-2:] != padded and self.rescale:
            out = F.interpolate(out, size=padded, mode="bilinear", align_corners=False)
        if out.shape[-2:] == padded:
            top, _, left, _ = self.padding_for(size)
            out = out[..., top:top + size[0], left:left + size[1]]
        return out.squeeze(1) if self.task == "regression" else out

    # -- freezing --------------------------------------------------------------------------------------------
    def freeze_encoder(self) -> None:
        if hasattr(getattr(self.encoder, "backbone", self.encoder), "peft_config"):
            raise ConfigError("freeze_backbone: true would freeze the PEFT adapters too, and nothing of the backbone "
                              "would train; peft_config already freezes the backbone's own weights: set "
                              "freeze_backbone: false", key="model.init_args.freeze_backbone")
        freeze = getattr(self.encoder, "freeze", None)
        if callable(freeze):
            freeze()
        else:
            self.encoder.requires_grad_(False)

    def freeze_decoder(self) -> None:
        self.neck.requires_grad_(False)
        self.decoder.requires_grad_(False)

    def freeze_head(self) -> None:
        self.head.requires_grad_(False)


def _split_args(model_args: dict[str, Any], key: str) -> tuple[dict, dict, dict, dict]:
    """Split model_args into (plain, backbone_*, decoder_*, head_*); refuse unknown keys."""
    plain, backbone, decoder, head = {}, {}, {}, {}
    known = list(MODEL_KEYS) + ["decoder_kwargs", "head_kwargs", "backbone_<arg>", "decoder_<arg>", "head_<arg>"]
    for k, v in model_args.items():
        if k in ("decoder_kwargs", "head_kwargs"):  # TerraTorch's dict forms of decoder_<arg> / head_<arg>
            if not isinstance(v, dict):
                raise ConfigError(f"{k} is a mapping of arguments, got {v!r}", key=f"{key}.{k}")
            (decoder if k == "decoder_kwargs" else head).update(v)
        elif k in MODEL_KEYS:
            plain[k] = v
        elif k.startswith("backbone_"):
            backbone[k[len("backbone_"):]] = v
        elif k.startswith("decoder_"):
            decoder[k[len("decoder_"):]] = v
        elif k.startswith("head_"):
            head[k[len("head_"):]] = v
        else:
            raise ConfigError(f"unknown model argument {k!r}.{did_you_mean(k, MODEL_KEYS)} model_args takes "
                              f"{', '.join(known)}", key=f"{key}.{k}")
    return plain, backbone, decoder, head


def _check_prefixed(builder: Any, kwargs: dict[str, Any], prefix: str, what: str, key: str,
                    provided: set[str] = frozenset()) -> None:
    """Every ``<prefix>_<arg>`` must be an argument of ``builder``; the error names the model_args key."""
    names, var_kw = accepted_kwargs(builder)
    if var_kw:
        return
    names -= set(provided)
    for k in kwargs:
        if k not in names:
            hint = did_you_mean(f"{prefix}_{k}", [f"{prefix}_{n}" for n in names])
            raise ConfigError(f"{what} has no argument {k!r} (from {prefix}_{k}).{hint} Accepted: "
                              f"{', '.join(f'{prefix}_{n}' for n in sorted(names))}", key=f"{key}.{prefix}_{k}")


def _backbone_kwargs(plain: dict[str, Any], prefixed: dict[str, Any]) -> dict[str, Any]:
    """``backbone_kwargs`` with the ``backbone_<arg>`` entries over it (they win)."""
    return {**dict(plain.get("backbone_kwargs") or {}), **prefixed}


def backbone_arguments(model_args: dict[str, Any], key: str = "model_args") -> dict[str, Any]:
    """The arguments ``model_args`` gives its backbone (the temporal wrapper's keys included)."""
    plain, prefixed, _, _ = _split_args(dict(model_args), key)
    return _backbone_kwargs(plain, prefixed)


def build_model(task: str, model_args: dict[str, Any], key: str = "model_args") -> EncoderDecoderModel:
    """Build the encoder–decoder model of ``task`` (segmentation, classification, regression)."""
    if task not in TASKS:
        raise ConfigError(f"unknown task {task!r}; one of {TASKS}", key=key)
    plain, backbone_kw, decoder_kw, head_kw = _split_args(dict(model_args), key)
    backbone_kw = _backbone_kwargs(plain, backbone_kw)

    temporal = {k: backbone_kw.pop(k) for k in TEMPORAL_KEYS if k in backbone_kw}
    backbone = plain.get("backbone")
    if backbone is None:
        raise ConfigError("model_args needs a backbone (e.g. backbone: terramind_v1_base)", key=f"{key}.backbone")
    if isinstance(backbone, str):
        builder = BACKBONE_REGISTRY.get(backbone, key=f"{key}.backbone")
        _check_prefixed(builder, backbone_kw, "backbone", f"backbone {backbone!r}", key)
        backbone = builder(**backbone_kw)
    elif backbone_kw:
        raise ConfigError(f"backbone_* arguments {sorted(backbone_kw)} given with an already built backbone",
                          key=f"{key}.backbone")
    channels = getattr(backbone, "out_channels", None)
    if not channels:
        raise ConfigError("the backbone has no out_channels list; it cannot feed necks/decoders", key=f"{key}.backbone")

    if plain.get("peft_config") is not None:
        from terramind_ft.models.peft import apply_peft  # peft (an optional extra) only when asked for

        backbone = apply_peft(backbone, plain["peft_config"], key=f"{key}.peft_config")
    if temporal:
        if not temporal.get("use_temporal"):
            raise ConfigError(f"{', '.join('backbone_' + k for k in temporal)} without backbone_use_temporal: true",
                              key=f"{key}.backbone_use_temporal")
        from terramind_ft.models.temporal import TemporalEncoder

        backbone = TemporalEncoder(backbone, pooling=temporal.get("temporal_pooling", "mean"),
                                   n_timestamps=temporal.get("temporal_n_timestamps"), key=key)
        channels = backbone.out_channels

    necks = build_necks(plain.get("necks"), list(channels), key=f"{key}.necks")
    num_classes = plain.get("num_classes")
    if task == "regression":
        if num_classes not in (None, 1):
            raise ConfigError("pixelwise regression predicts one value per pixel; remove num_classes",
                              key=f"{key}.num_classes")
    elif not isinstance(num_classes, int) or num_classes < 2:
        raise ConfigError(f"{task} needs num_classes >= 2, got {num_classes!r}", key=f"{key}.num_classes")
    decoder, head = _decoder_and_head(task, plain.get("decoder", DEFAULT_DECODER[task]), decoder_kw, head_kw,
                                      necks.out_channels, num_classes, key)
    aux_heads = _aux_heads(task, plain.get("aux_decoders"), necks.out_channels, num_classes, f"{key}.aux_decoders")

    padding = plain.get("padding", "reflect")
    if padding not in PADDING_MODES:
        raise ConfigError(f"unknown padding {padding!r}; one of {PADDING_MODES}", key=f"{key}.padding")
    return EncoderDecoderModel(task, backbone, necks, decoder, head, rescale=bool(plain.get("rescale", True)),
                               padding=padding, aux_heads=aux_heads)


def _decoder_and_head(task: str, decoder_name: str | nn.Module, decoder_kw: dict[str, Any], head_kw: dict[str, Any],
                      channels: list[int], num_classes: int | None, key: str,
                      decoder_key: str = "decoder") -> tuple[nn.Module, nn.Module]:
    """The decoder (by name, on the neck's ``channels``) and the task's head after it."""
    if isinstance(decoder_name, nn.Module):
        decoder = decoder_name
    else:
        decoder_cls = DECODER_REGISTRY.get(decoder_name, key=f"{key}.{decoder_key}")
        _check_prefixed(decoder_cls, decoder_kw, "decoder", f"decoder {decoder_name!r}", key, {"embed_dim"})
        if getattr(decoder_cls, "includes_head", False):
            if "num_classes" not in decoder_kw:
                return _decoder_as_head(task, decoder_name, decoder_cls, decoder_kw, head_kw, channels,
                                        num_classes, key), nn.Identity()
            # TerraTorch 1.2.11 builds such a decoder by name only when given decoder_num_classes, and then puts
            # the task's head after it (its factory reads includes_head off the registry, not the class). The
            # same here, so its configs build its network and its checkpoints load.
            warnings.warn(f"decoder_num_classes={decoder_kw['num_classes']!r}: {decoder_name}'s maps feed the "
                          f"{HEAD_FOR_TASK[task]}, as in TerraTorch 1.2.11; leave decoder_num_classes out for a "
                          f"linear probe ({decoder_name} then outputs the classes, with no head after it)",
                          stacklevel=2)
        decoder = decoder_cls(channels, **decoder_kw)
    head_name = HEAD_FOR_TASK[task]
    head_cls = HEAD_REGISTRY.get(head_name)
    _check_prefixed(head_cls, head_kw, "head", head_name, key, {"in_channels", "num_classes"})
    if task == "regression":
        return decoder, head_cls(decoder.out_channels, **head_kw)
    return decoder, head_cls(decoder.out_channels, num_classes, **head_kw)


def _decoder_as_head(task: str, name: str, decoder_cls: Any, decoder_kw: dict[str, Any], head_kw: dict[str, Any],
                     channels: list[int], num_classes: int | None, key: str) -> nn.Module:
    """A decoder that is its own head (``includes_head``, e.g. LinearDecoder): it outputs the classes (one value
    for regression) and nothing follows it (an identity ``head``, as TerraTorch intends)."""
    if task == "classification":
        raise ConfigError(f"{name} outputs per-pixel maps, not one score per class: a classification model takes "
                          "IdentityDecoder or MLPDecoder and the ClassificationHead", key=f"{key}.decoder")
    if head_kw:
        raise ConfigError(f"{name} is its own head: remove {', '.join('head_' + k for k in head_kw)}",
                          key=f"{key}.head_{next(iter(head_kw))}")
    return decoder_cls(channels, **decoder_kw, num_classes=1 if task == "regression" else num_classes)


def _aux_heads(task: str, specs: Any, channels: list[int], num_classes: int | None, key: str) -> dict[str, nn.Module]:
    """``aux_decoders`` entries as TerraTorch writes them: ``{name, decoder, decoder_args}`` (or TerraTorch's
    ``{class_path: ...AuxiliaryHead, init_args: {...}}``), ``decoder_args`` holding ``decoder_<arg>`` and
    ``head_<arg>`` keys."""
    if specs is None:
        return {}
    if not isinstance(specs, (list, tuple)):
        raise ConfigError(f"aux_decoders is a list of {{name, decoder, decoder_args}}, got {specs!r}", key=key)
    heads: dict[str, nn.Module] = {}
    for i, spec in enumerate(specs):
        where = f"{key}[{i}]"
        if isinstance(spec, Mapping) and "class_path" in spec:
            if not str(spec["class_path"]).endswith("AuxiliaryHead"):
                raise ConfigError(f"an aux_decoders entry is an AuxiliaryHead, not {spec['class_path']}", key=where)
            spec = spec.get("init_args") or {}
        if not isinstance(spec, Mapping):
            raise ConfigError(f"expected {{name, decoder, decoder_args}}, got {spec!r}", key=where)
        check_known_keys(spec, AUX_KEYS, where, "An auxiliary head")
        name = spec.get("name")
        if not isinstance(name, str) or not name or "." in name:
            raise ConfigError(f"each auxiliary head needs a name (no dots) for aux_loss, got {name!r}",
                              key=f"{where}.name")
        if name in heads:
            raise ConfigError(f"two auxiliary heads are named {name!r}", key=f"{where}.name")
        if "decoder" not in spec:
            raise ConfigError("an auxiliary head needs a decoder (e.g. FCNDecoder)", key=f"{where}.decoder")
        decoder_kw, head_kw = {}, {}
        for k, v in dict(spec.get("decoder_args") or {}).items():
            if k.startswith("decoder_"):
                decoder_kw[k[len("decoder_"):]] = v
            elif k.startswith("head_"):
                head_kw[k[len("head_"):]] = v
            else:
                raise ConfigError(f"decoder_args keys are decoder_<arg> or head_<arg>, got {k!r}",
                                  key=f"{where}.decoder_args.{k}")
        decoder, head = _decoder_and_head(task, spec["decoder"], decoder_kw, head_kw, channels, num_classes,
                                          f"{where}.decoder_args", decoder_key="decoder")
        heads[name] = AuxiliaryHead(decoder, head)
    return heads


class EncoderDecoderFactory:
    """TerraTorch-compatible name for :func:`build_model` (``model_factory: EncoderDecoderFactory``)."""

    def build_model(self, task: str, **model_args: Any) -> EncoderDecoderModel:
        return build_model(task, model_args)


MODEL_FACTORIES = {"EncoderDecoderFactory": EncoderDecoderFactory}


def without_weight_sources(model_args: Mapping[str, Any], prefix: str = "backbone_") -> dict[str, Any]:
    """``model_args`` for a model whose every weight comes from a checkpoint: no pretrained download and no
    backbone file read (which may not exist on the machine the checkpoint was copied to). ``prefix=""``: a
    backbone's own arguments (``pretrained``, ``ckpt_path``; an EmbeddingTask's ``backbone_kwargs``)."""
    out = dict(model_args)
    if out.get(f"{prefix}pretrained"):
        out[f"{prefix}pretrained"] = False
    if out.get(f"{prefix}ckpt_path") is not None:
        out[f"{prefix}ckpt_path"] = None
    if prefix and isinstance(out.get("backbone_kwargs"), Mapping):
        out["backbone_kwargs"] = without_weight_sources(out["backbone_kwargs"], prefix="")
    return out
