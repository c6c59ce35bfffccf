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


def _saved_bytes(fn, *tensors) -> tuple[torch.Tensor, int]:
    """``fn(*tensors)`` and the bytes its graph keeps for backward (a tensor kept twice counts once)."""
    saved: dict[tuple[int, int], int] = {}

    def pack(t):
        saved[(t.untyped_storage().data_ptr(), t.storage_offset())] = t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn(*tensors)
    return out, sum(saved.values())


def test_bf16_with_gradients_runs_the_float32_kernel_saves_bf16_and_is_as_close_to_float64():
    for seed in range(3):
        torch.manual_seed(seed)
        base = [torch.randn(2, 3, 64, 16) for _ in range(3)]
        grad_out = torch.randn(2, 3, 64, 16)

        def run(fn, dtype):
            leaves = [b.to(dtype).requires_grad_() for b in base]
            out, saved = _saved_bytes(fn, *leaves)
            out.backward(grad_out.to(dtype))
            return out, [t.grad for t in leaves], saved

        exact, exact_grads, _ = run(F.scaled_dot_product_attention, torch.float64)
        kernel, kernel_grads, kernel_saved = run(F.scaled_dot_product_attention, torch.bfloat16)
        fast, fast_grads, fast_saved = run(attention, torch.bfloat16)
        assert "Float32Kernel" in type(fast.grad_fn).__name__  # the float32 kernel's path was taken
        assert fast.dtype == torch.bfloat16 and all(g.dtype == torch.bfloat16 for g in fast_grads)
        assert fast_saved <= kernel_saved  # activation memory of the bf16 kernel, not of float32 copies

        def error(a, b):
            return max((x.double() - y).abs().max().item() for x, y in zip(a, b, strict=True))

        assert error([fast], [exact]) <= error([kernel], [exact]) * 1.25
        assert error(fast_grads, exact_grads) <= error(kernel_grads, exact_grads) * 1.25
        assert torch.get_float32_matmul_precision() == "highest"


def test_bf16_masked_attention_with_gradients_keeps_the_bf16_kernel():
    q, k, v = _qkv(torch.bfloat16, requires_grad=True)
    mask = torch.rand(2, 1, 64, 64) > 0.2
    out = attention(q, k, v, attn_mask=mask)
    out.float().sum().backward()
    assert torch.equal(out, F.scaled_dot_product_attention(q, k, v, attn_mask=mask)) and q.grad is not None


def test_a_bf16_block_trains_through_the_fast_path_like_float32():
    from terramind_ft.models.terramind.layers import Block

    torch.manual_seed(0)
    block = Block(64, 4, mlp_ratio=4.0)
    x = torch.randn(2, 50, 64)
    block(x).square().mean().backward()
    reference = [p.grad.clone() for p in block.parameters()]
    block.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        block(x).float().square().mean().backward()
    for p, g in zip(block.parameters(), reference, strict=True):
        assert torch.allclose(p.grad, g, rtol=0.05, atol=0.05 * g.abs().max().item())


def test_class_ids_equal_argmax_with_ties():
    logits = torch.randn(3, 5, 17, 9)
    logits[:, 2] = logits[:, 4] = logits.max(dim=1).values + 1  # a tie: the first index wins in both
    assert torch.equal(class_ids(logits, dim=1), logits.argmax(dim=1))
    assert (class_ids(logits, dim=1) == 2).all()


def test_the_swiglu_mlp_gives_autograds_values_and_gradients_and_keeps_less():
    from terramind_ft.models.terramind.layers import GatedMlp

    torch.manual_seed(0)
    mlp = GatedMlp(32, 64)
    x = torch.randn(2, 10, 32, requires_grad=True)
    for autocast in (False, True):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            # as in a block, the input is no leaf (a LayerNorm's output): autocast caches casts of leaves only
            out, fast_saved = _saved_bytes(lambda t: mlp(t.clone()), x)
            fast_grads = torch.autograd.grad(out.float().sum(), [x, *mlp.parameters()])

            def plain(t):
                t = t.clone()
                return mlp.fc2(mlp.act(mlp.fc1(t)) * mlp.fc3(t))

            reference, plain_saved = _saved_bytes(plain, x)
            plain_grads = torch.autograd.grad(reference.float().sum(), [x, *mlp.parameters()])
        assert torch.equal(out, reference)
        assert all(torch.equal(a, b) for a, b in zip(fast_grads, plain_grads, strict=True))
        hidden = 2 * 10 * 64 * (2 if autocast else 4)  # one [tokens, hidden] tensor in the compute dtype
        assert fast_saved <= plain_saved - hidden
