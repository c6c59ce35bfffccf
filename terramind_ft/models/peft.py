"""Parameter-efficient fine-tuning of the backbone with the ``peft`` library (LoRA and its kin).

``model_args.peft_config`` as TerraTorch users write it::

    peft_config:
      method: LORA                     # a peft.PeftType name (LORA, LOHA, LOKR, IA3, ...)
      replace_qkv: qkv                 # split each fused ``*.qkv`` Linear into q_linear / k_linear / v_linear
      peft_config_kwargs:              # passed to peft's config class of that method (LoraConfig, ...)
        target_modules: [qkv.q_linear, qkv.v_linear, mlp.fc1, mlp.fc2]
        r: 16
        lora_alpha: 16
        lora_dropout: 0.05

The backbone is wrapped by ``peft.get_peft_model``: its own weights are frozen, the adapters train, and the
necks, decoder and head train as usual. State-dict names are TerraTorch's (``encoder.base_model.model...``), so
checkpoints move between the two tools. :func:`merge_peft` folds the adapters into the weights and joins the split
qkv projections again: the merged model has the plain backbone's architecture and names
(``terramind-ft merge-lora`` writes such a checkpoint for inference).

``peft`` is an optional dependency: ``pip install 'terramind-ft[peft]'``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from terramind_ft.errors import ConfigError, check_known_keys, did_you_mean

PEFT_KEYS = ("method", "replace_qkv", "peft_config_kwargs")
INSTALL_HINT = "pip install 'terramind-ft[peft]'"


@dataclass(frozen=True)
class PeftSpec:
    """A validated ``peft_config``."""

    method: str
    replace_qkv: str | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_mapping(cls, config: Any, key: str) -> PeftSpec:
        if not isinstance(config, Mapping):
            raise ConfigError(f"peft_config must be a mapping with {', '.join(PEFT_KEYS)}, got {config!r}", key=key)
        check_known_keys(config, PEFT_KEYS, key, "peft_config")
        method = config.get("method")
        if not isinstance(method, str) or not method:
            raise ConfigError("peft_config needs a method, e.g. method: LORA", key=f"{key}.method")
        replace = config.get("replace_qkv")
        if replace is not None and (not isinstance(replace, str) or not replace):
            raise ConfigError(f"replace_qkv is the name of the fused qkv layers (qkv), got {replace!r}",
                              key=f"{key}.replace_qkv")
        kwargs = config.get("peft_config_kwargs") or {}
        if not isinstance(kwargs, Mapping):
            raise ConfigError(f"peft_config_kwargs must be a mapping, got {kwargs!r}", key=f"{key}.peft_config_kwargs")
        return cls(method.upper(), replace, dict(kwargs))


class SplitQKV(nn.Module):
    """A fused ``qkv`` Linear as three Linears, ``q_linear``, ``k_linear`` and ``v_linear``, whose outputs are
    concatenated in the fused order: the same function, but adapters can target q and v alone."""

    def __init__(self, fused: nn.Linear):
        super().__init__()
        if fused.out_features != 3 * fused.in_features:
            raise ValueError(f"a fused qkv Linear maps d -> 3d, this one {fused.in_features} -> {fused.out_features}")
        d = fused.in_features
        has_bias = fused.bias is not None
        for i, name in enumerate(("q_linear", "k_linear", "v_linear")):
            part = nn.Linear(d, d, bias=has_bias, device=fused.weight.device, dtype=fused.weight.dtype)
            with torch.no_grad():
                part.weight.copy_(fused.weight[i * d:(i + 1) * d])
                if has_bias:
                    part.bias.copy_(fused.bias[i * d:(i + 1) * d])
            part.weight.requires_grad_(fused.weight.requires_grad)
            if has_bias:
                part.bias.requires_grad_(fused.bias.requires_grad)
            setattr(self, name, part)
        self.in_features, self.out_features = d, 3 * d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.q_linear(x), self.k_linear(x), self.v_linear(x)], dim=-1)

    def fused(self) -> nn.Linear:
        """The one Linear these three are (call after the adapters are merged)."""
        parts = [self.q_linear, self.k_linear, self.v_linear]
        if not all(isinstance(p, nn.Linear) for p in parts):
            raise RuntimeError("merge the adapters before joining q/k/v (merge_peft does both)")
        d = self.in_features
        has_bias = parts[0].bias is not None
        out = nn.Linear(d, 3 * d, bias=has_bias, device=parts[0].weight.device, dtype=parts[0].weight.dtype)
        with torch.no_grad():
            out.weight.copy_(torch.cat([p.weight for p in parts]))
            if has_bias:
                out.bias.copy_(torch.cat([p.bias for p in parts]))
        return out


def _replace(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent_name) if parent_name else root, child, new)


def split_qkv(model: nn.Module, suffix: str, key: str = "peft_config.replace_qkv") -> int:
    """Replace every Linear named ``*.<suffix>`` by a :class:`SplitQKV`; returns how many."""
    targets = [(n, m) for n, m in model.named_modules() if n == suffix or n.endswith(f".{suffix}")]
    if not targets:
        raise ConfigError(f"no layer of the backbone is named {suffix!r} (its attention layers are named like "
                          f"{_example_names(model)}); give the last part of the fused qkv layer's name, e.g. qkv",
                          key=key)
    for name, module in targets:
        if not isinstance(module, nn.Linear):
            raise ConfigError(f"{name} is a {type(module).__name__}, not the fused qkv Linear", key=key)
        _replace(model, name, SplitQKV(module))
    return len(targets)


def _example_names(model: nn.Module, n: int = 4) -> str:
    names = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    return ", ".join(names[:n]) + (", ..." if len(names) > n else "")


def _import_peft(key: str) -> Any:
    try:
        import peft
    except ImportError:
        raise ConfigError(f"peft_config needs the peft library: {INSTALL_HINT}", key=key) from None
    return peft


def apply_peft(backbone: nn.Module, config: Any, key: str = "model_args.peft_config") -> nn.Module:
    """``backbone`` with adapters: a ``peft.PeftModel`` whose base weights are frozen."""
    spec = PeftSpec.from_mapping(config, key)
    peft = _import_peft(key)
    config_classes = {str(getattr(k, "value", k)).upper(): v for k, v in peft.PEFT_TYPE_TO_CONFIG_MAPPING.items()}
    if spec.method not in config_classes:
        raise ConfigError(f"unknown PEFT method {spec.method!r}.{did_you_mean(spec.method, config_classes)} peft "
                          f"{peft.__version__} offers {', '.join(sorted(config_classes))}", key=f"{key}.method")
    try:
        peft_config = config_classes[spec.method](**spec.kwargs)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{config_classes[spec.method].__name__} refuses these arguments: {err}",
                          key=f"{key}.peft_config_kwargs") from None
    if spec.replace_qkv:
        split_qkv(backbone, spec.replace_qkv, key=f"{key}.replace_qkv")
    try:
        return peft.get_peft_model(backbone, peft_config)
    except ValueError as err:  # peft: "Target modules {...} not found in the base model"
        raise ConfigError(f"{str(err).splitlines()[0]} Layer names look like {_example_names(backbone)}"
                          + (" (with replace_qkv: qkv, also qkv.q_linear, qkv.k_linear, qkv.v_linear)"
                             if not spec.replace_qkv else ""),
                          key=f"{key}.peft_config_kwargs.target_modules") from None


def is_peft_model(module: nn.Module) -> bool:
    return hasattr(module, "peft_config") and hasattr(module, "merge_and_unload")


def trainable_parameters(module: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    total = sum(p.numel() for p in module.parameters())
    return sum(p.numel() for p in module.parameters() if p.requires_grad), total


def merge_peft(backbone: nn.Module) -> nn.Module:
    """The plain backbone with the adapters folded into its weights and split qkv layers joined again.

    The result has no peft layers: the same architecture and state-dict names as a backbone built without
    ``peft_config``, and the same outputs as the adapted one (up to float rounding)."""
    if not is_peft_model(backbone):
        raise ValueError("this backbone has no adapters to merge (it was built without peft_config)")
    try:
        merged = backbone.merge_and_unload()
    except (AttributeError, NotImplementedError, ValueError) as err:
        raise ConfigError(f"the PEFT method of this model cannot be merged into the weights ({err}); run it with "
                          "its adapters instead") from None
    for name, module in list(merged.named_modules()):
        if isinstance(module, SplitQKV):
            _replace(merged, name, module.fused())
    return merged
