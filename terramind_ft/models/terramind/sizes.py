"""The four TerraMind v1 sizes in one table: widths, depths, MLP type, biases and where their weights live.

Values follow the reference registry (TerraTorch 1.2.11 ``terramind_register.py``) and the key layout of the
official checkpoints: tiny/small use a plain GELU MLP with biases everywhere; base/large use a bias-free SwiGLU
MLP (``fc1``/``fc2``/``fc3``, hidden ``int(2 * 4 * dim / 3)``). Every size uses 64-wide heads, LayerNorm with
eps 1e-6 and a zero bias buffer, patch size 16 and a 224-px pretraining size.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from terramind_ft.errors import UnknownNameError

HF_ORGANISATION = "ibm-esa-geospatial"


@dataclass(frozen=True)
class TerraMindSize:
    """Hyper-parameters of one TerraMind v1 size."""

    name: str
    dim: int
    encoder_depth: int
    decoder_depth: int  # used by the encoder-decoder (TiM, generation), not by the backbone
    num_heads: int
    gated_mlp: bool  # SwiGLU (fc1, fc2, fc3) instead of fc1 -> GELU -> fc2
    bias: bool  # qkv, attention proj and MLP biases (all three agree in every v1 size)
    mlp_ratio: float = 4.0
    neck_indices: tuple[int, ...] = (2, 5, 8, 11)  # layers the reference docs suggest feeding to a UNet/UPerNet

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    @property
    def mlp_hidden(self) -> int:
        ratio_dim = self.mlp_ratio * self.dim
        return int(2 * ratio_dim / 3) if self.gated_mlp else int(ratio_dim)

    @property
    def registry_name(self) -> str:
        return f"terramind_v1_{self.name}"

    @property
    def hf_repo_id(self) -> str:
        return f"{HF_ORGANISATION}/TerraMind-1.0-{self.name}"

    @property
    def hf_filename(self) -> str:
        return f"TerraMind_v1_{self.name}.pt"

    def block_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :class:`~terramind_ft.models.terramind.layers.Block` / ``DecoderBlock``."""
        return dict(dim=self.dim, num_heads=self.num_heads, mlp_ratio=self.mlp_ratio, gated_mlp=self.gated_mlp,
                    qkv_bias=self.bias, proj_bias=self.bias, mlp_bias=self.bias)


SIZES: dict[str, TerraMindSize] = {
    s.name: s
    for s in [
        TerraMindSize("tiny", dim=192, encoder_depth=12, decoder_depth=4, num_heads=3, gated_mlp=False, bias=True),
        TerraMindSize("small", dim=384, encoder_depth=12, decoder_depth=6, num_heads=6, gated_mlp=False, bias=True),
        TerraMindSize("base", dim=768, encoder_depth=12, decoder_depth=12, num_heads=12, gated_mlp=True, bias=False),
        TerraMindSize("large", dim=1024, encoder_depth=24, decoder_depth=24, num_heads=16, gated_mlp=True,
                      bias=False, neck_indices=(5, 11, 17, 23)),
    ]
}


def get_size(name: str, *, key: str | None = None) -> TerraMindSize:
    """The size entry for ``tiny``/``small``/``base``/``large`` (case-insensitive)."""
    try:
        return SIZES[name.lower()]
    except KeyError:
        raise UnknownNameError("TerraMind size", name, SIZES, key=key) from None


def register_size_variants(registry: Any, model_cls: type, suffix: str,
                           describe: Callable[[TerraMindSize], str]) -> None:
    """Register ``terramind_v1_<size><suffix>`` in ``registry`` for every size, each building
    ``model_cls(size=<size>, **kwargs)``.

    Each builder carries ``model_cls``'s signature without ``size``, so that the registry can reject unknown
    arguments and list the valid ones; ``describe(size)`` is its docstring.
    """
    signature = inspect.signature(model_cls.__init__)
    parameters = [p for name, p in signature.parameters.items() if name not in ("self", "size")]

    def builder(size: TerraMindSize) -> Callable[..., Any]:
        def build(*args: Any, **kwargs: Any) -> Any:
            return model_cls(*args, size=size.name, **kwargs)

        build.__name__ = build.__qualname__ = f"{size.registry_name}{suffix}"
        build.__doc__ = describe(size)
        build.__signature__ = signature.replace(  # type: ignore[attr-defined]
            parameters=parameters, return_annotation=model_cls)
        return build

    for size in SIZES.values():
        registry.register(builder(size), name=f"{size.registry_name}{suffix}")
