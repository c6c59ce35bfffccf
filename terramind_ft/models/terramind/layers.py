"""Transformer building blocks of TerraMind v1, with the reference's parameter names.

State-dict names matter: they are the keys of the official checkpoints (``encoder.{i}.attn.qkv.weight``,
``decoder.{i}.cross_attn.kv.weight`` ...). Numerics follow TerraTorch 1.2.11: pre-norm blocks, LayerNorm with
eps 1e-6 and a zero *buffer* as bias, fused qkv reshaped as (3, heads, head_dim), attention through
``F.scaled_dot_product_attention`` through :func:`attention`, which picks the CPU kernel by dtype (boolean masks
here use True = "masked out", as in the reference API).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class LayerNorm(nn.Module):
    """LayerNorm whose bias is a persistent zero buffer (present in checkpoints, never trained)."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))
        self.register_buffer("bias", torch.zeros(dim))

    def forward(self, x: Tensor) -> Tensor:
        return F.layer_norm(x, (x.shape[-1],), self.weight, self.bias, self.eps)


@contextmanager
def _float32_matmul_precision(precision: str) -> Iterator[None]:
    previous = torch.get_float32_matmul_precision()
    if previous == precision:
        yield
        return
    torch.set_float32_matmul_precision(precision)
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(previous)


# The CPU flash kernel's own forward/backward ops (what F.scaled_dot_product_attention dispatches to on CPU).
# Private ATen ops: when a torch build lacks them, training keeps the public bf16 kernel.
_CPU_FLASH = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
_CPU_FLASH_BACKWARD = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu_backward", None)


class _Bf16AttentionThroughFloat32Kernel(torch.autograd.Function):
    """bf16 attention with gradients, computed by the float32 flash kernel at matmul precision "medium".

    Forward and backward run the float32 kernel (bf16 matmuls inside, float32 softmax and accumulation); what is
    saved for backward stays bf16 (q, k, v, out) plus the float32 log-sum-exp, so activation memory is that of
    the bf16 kernel. Measured on the 2-core CPU for [4, 12, 2048, 64] (TerraMind base, 512 px, two modalities):
    forward 163 vs 301 ms, backward 455 vs 470 ms; gradients as close to float64 as the bf16 kernel's or closer.
    """

    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        with _float32_matmul_precision("medium"):
            out, logsumexp = _CPU_FLASH(q.float(), k.float(), v.float())
        out = out.to(q.dtype)
        ctx.save_for_backward(q, k, v, out, logsumexp)
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        q, k, v, out, logsumexp = ctx.saved_tensors
        with _float32_matmul_precision("medium"):
            grads = _CPU_FLASH_BACKWARD(grad_out.float(), q.float(), k.float(), v.float(), out.float(), logsumexp,
                                        0.0, False)
        return tuple(g.to(t.dtype) for g, t in zip(grads, (q, k, v), strict=True))


def attention(q: Tensor, k: Tensor, v: Tensor, attn_mask: Tensor | None = None) -> Tensor:
    """``F.scaled_dot_product_attention`` with the kernel chosen per device and dtype.

    On CPU, bf16 q/k/v (autocast) go through the float32 kernel with bf16 matmuls (float32 matmul precision
    "medium" for this call only). Without gradients (a frozen backbone, inference): 1.8x faster than the bf16
    flash kernel (40 vs 71 ms for [4, 3, 2048, 64] on the 2-core CPU) and closer to float64 (max error 4.9e-4
    vs 7.0e-4). With gradients (full fine-tuning) the same through :class:`_Bf16AttentionThroughFloat32Kernel`,
    which keeps the saved activations in bf16; masked attention with gradients keeps the bf16 kernel. Float32
    inputs are never changed, so fp32 runs keep the reference's numerics.
    """
    if q.device.type == "cpu" and q.dtype == torch.bfloat16:
        needs_grad = torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad)
        # autocast would cast the float32 inputs straight back to bf16: switch it off for these calls
        if not needs_grad:
            with torch.autocast("cpu", enabled=False), _float32_matmul_precision("medium"):
                out = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=attn_mask)
            return out.to(q.dtype)
        if attn_mask is None and _CPU_FLASH is not None and _CPU_FLASH_BACKWARD is not None:
            with torch.autocast("cpu", enabled=False):
                return _Bf16AttentionThroughFloat32Kernel.apply(q, k, v)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)


def _sdpa_mask(mask: Tensor | None) -> Tensor | None:
    """Convert a True = masked-out boolean mask [B, Nq|1, Nk] into SDPA's True = attend form [B, 1, Nq|1, Nk]."""
    if mask is None:
        return None
    return ~mask.unsqueeze(1)


class Attention(nn.Module):
    """Multi-head self-attention with a fused qkv projection."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, proj_bias: bool = True):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim, bias=proj_bias)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        x = attention(q, k, v, attn_mask=_sdpa_mask(mask))
        return self.proj(x.transpose(1, 2).reshape(b, n, d))


class CrossAttention(nn.Module):
    """Multi-head cross-attention: queries from ``x``, keys/values (fused ``kv``) from ``context``."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, proj_bias: bool = True):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, dim * 2, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim, bias=proj_bias)

    def forward(self, x: Tensor, context: Tensor, mask: Tensor | None = None) -> Tensor:
        b, n, d = x.shape
        m = context.shape[1]
        q = self.q(x).reshape(b, n, self.num_heads, self.head_dim).transpose(1, 2)
        k, v = self.kv(context).reshape(b, m, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        x = attention(q, k, v, attn_mask=_sdpa_mask(mask))
        return self.proj(x.transpose(1, 2).reshape(b, n, d))


class Mlp(nn.Module):
    """fc1 -> exact GELU -> fc2 (tiny and small)."""

    def __init__(self, dim: int, hidden: int, bias: bool = True):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden, bias=bias)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class _SiluGate(torch.autograd.Function):
    """``silu(a) * b`` keeping only ``a`` and ``b`` for backward, where autograd also keeps ``silu(a)``: one
    ``[tokens, hidden]`` tensor less per block while training (0.38 GiB for base at 512 px, batch 4, bf16) for
    one more silu in the backward pass (7 ms per block there). Same values and gradients, bit for bit."""

    @staticmethod
    def forward(ctx, a: Tensor, b: Tensor) -> Tensor:
        ctx.save_for_backward(a, b)
        return F.silu(a) * b

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None]:
        a, b = ctx.saved_tensors
        grad_a = torch.ops.aten.silu_backward(grad * b, a) if ctx.needs_input_grad[0] else None
        grad_b = grad * F.silu(a) if ctx.needs_input_grad[1] else None
        return grad_a, grad_b


class GatedMlp(nn.Module):
    """SwiGLU: fc2(SiLU(fc1 x) * fc3 x) (base and large)."""

    def __init__(self, dim: int, hidden: int, bias: bool = False):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden, bias=bias)
        self.fc2 = nn.Linear(hidden, dim, bias=bias)
        self.fc3 = nn.Linear(dim, hidden, bias=bias)
        self.act = nn.SiLU()

    def forward(self, x: Tensor) -> Tensor:
        # fc1 and fc3 each keep their own bf16 copy of x under autocast; one shared copy would sum their input
        # gradients in bf16 instead of float32, so it is not done
        gate, value = self.fc1(x), self.fc3(x)
        if type(self.act) is nn.SiLU and torch.is_grad_enabled():
            return self.fc2(_SiluGate.apply(gate, value))
        return self.fc2(self.act(gate) * value)


def make_mlp(dim: int, mlp_ratio: float, gated: bool, bias: bool) -> nn.Module:
    if gated:
        return GatedMlp(dim, int(2 * mlp_ratio * dim / 3), bias=bias)
    return Mlp(dim, int(mlp_ratio * dim), bias=bias)


class Block(nn.Module):
    """Pre-norm encoder block: x + Attn(LN1 x), then + MLP(LN2 x)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, gated_mlp: bool = False,
                 qkv_bias: bool = True, proj_bias: bool = True, mlp_bias: bool = True):
        super().__init__()
        self.norm1 = LayerNorm(dim)
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias, proj_bias=proj_bias)
        self.norm2 = LayerNorm(dim)
        self.mlp = make_mlp(dim, mlp_ratio, gated_mlp, mlp_bias)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        x = x + self.attn(self.norm1(x), mask)
        return x + self.mlp(self.norm2(x))


class DecoderBlock(nn.Module):
    """Pre-norm decoder block: self-attention, cross-attention (query/context norms), MLP."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, gated_mlp: bool = False,
                 qkv_bias: bool = True, proj_bias: bool = True, mlp_bias: bool = True):
        super().__init__()
        self.norm1 = LayerNorm(dim)
        self.self_attn = Attention(dim, num_heads, qkv_bias=qkv_bias, proj_bias=proj_bias)
        # Registration order = state-dict order of the official checkpoints (cross_attn before its norms).
        self.cross_attn = CrossAttention(dim, num_heads, qkv_bias=qkv_bias, proj_bias=proj_bias)
        self.query_norm = LayerNorm(dim)
        self.context_norm = LayerNorm(dim)
        self.norm2 = LayerNorm(dim)
        self.mlp = make_mlp(dim, mlp_ratio, gated_mlp, mlp_bias)

    def forward(self, x: Tensor, context: Tensor, self_mask: Tensor | None = None,
                context_mask: Tensor | None = None) -> Tensor:
        x = x + self.self_attn(self.norm1(x), self_mask)
        x = x + self.cross_attn(self.query_norm(x), self.context_norm(context), context_mask)
        return x + self.mlp(self.norm2(x))


def sincos_pos_emb_2d(h: int, w: int, dim: int, temperature: float = 10000.0) -> Tensor:
    """Fixed 2-D sin-cos table [1, h*w, dim]: [sin(r w), cos(r w), sin(c w), cos(c w)], row-major tokens."""
    assert dim % 4 == 0, "2-D sin-cos position embedding needs dim divisible by 4"
    quarter = dim // 4
    omega = 1.0 / temperature ** (torch.arange(quarter, dtype=torch.float32) / quarter)
    rows, cols = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32),
                                indexing="ij")
    r = rows.flatten()[:, None] * omega[None]
    c = cols.flatten()[:, None] * omega[None]
    return torch.cat([r.sin(), r.cos(), c.sin(), c.cos()], dim=1)[None]


def sincos_pos_emb_1d(length: int, dim: int, temperature: float = 10000.0) -> Tensor:
    """Fixed 1-D sin-cos table [1, length, dim]: [sin(p w), cos(p w)]."""
    half = dim // 2
    omega = 1.0 / temperature ** (torch.arange(half, dtype=torch.float32) / half)
    p = torch.arange(length, dtype=torch.float32)[:, None] * omega[None]
    return torch.cat([p.sin(), p.cos()], dim=1)[None]


def resize_pos_emb(pos_emb: Tensor, grid: tuple[int, int]) -> Tensor:
    """Bicubic resize (align_corners=False, no antialias) of a square [1, N, D] table to ``grid`` (h, w)."""
    n, d = pos_emb.shape[1], pos_emb.shape[2]
    side = int(math.isqrt(n))
    if (side, side) == tuple(grid):
        return pos_emb
    table = pos_emb.reshape(1, side, side, d).permute(0, 3, 1, 2)
    table = F.interpolate(table, size=grid, mode="bicubic", align_corners=False)
    return table.permute(0, 2, 3, 1).reshape(1, grid[0] * grid[1], d)
