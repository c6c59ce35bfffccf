"""The attention kernel is chosen per device and dtype without changing what fp32 runs compute."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from terramind_ft.models.terramind.layers import attention
from terramind_ft.ops import class_ids


def _qkv(dtype, requires_grad=False):
    torch.manual_seed(0)
    return [torch.randn(2, 3, 64, 16, dtype=dtype, requires_grad=requires_grad) for _ in range(3)]


def test_float32_attention_is_exactly_sdpa_and_leaves_the_matmul_precision_alone():
    q, k, v = _qkv(torch.float32)
    before = torch.get_float32_matmul_precision()
    assert torch.equal(attention(q, k, v), F.scaled_dot_product_attention(q, k, v))
    assert torch.get_float32_matmul_precision() == before


def test_bf16_without_gradients_is_at_least_as_close_to_float64_as_the_bf16_kernel():
    q, k, v = _qkv(torch.bfloat16)
    exact = F.scaled_dot_product_attention(q.double(), k.double(), v.double())
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():
        fast = attention(q, k, v)
    assert fast.dtype == torch.bfloat16
    kernel_error = (F.scaled_dot_product_attention(q, k, v).double() - exact).abs().max()
    assert (fast.double() - exact).abs().max() <= kernel_error * 1.01
    assert torch.get_float32_matmul_precision() == "highest"


def test_bf16_with_gradients_keeps_the_bf16_kernel_and_its_backward():
    q, k, v = _qkv(torch.bfloat16, requires_grad=True)
    out = attention(q, k, v)
    out.float().sum().backward()
    assert torch.equal(out, F.scaled_dot_product_attention(q, k, v)) and q.grad is not None


def test_class_ids_equal_argmax_with_ties():
    logits = torch.randn(3, 5, 17, 9)
    logits[:, 2] = logits[:, 4] = logits.max(dim=1).values + 1  # a tie: the first index wins in both
    assert torch.equal(class_ids(logits, dim=1), logits.argmax(dim=1))
    assert (class_ids(logits, dim=1) == 2).all()
