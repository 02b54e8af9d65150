"""ms_deform_attn on CUDA: gradcheck, parity with the CPU kernel and the reference, half
precision, autocast, the current stream.

Every test here is marked `cuda` and is skipped (with the reason) where no GPU exists.
"""

from __future__ import annotations

import pytest
import torch
from msda_cases import ARG_NAMES, call, make_inputs, random_config

from densenets.ops import MultiScaleDeformableAttention, ms_deform_attn, ms_deform_attn_reference

pytestmark = pytest.mark.cuda

FLOATS = ("value", "sampling_locations", "attention_weights")


def to_cuda(t: dict, dtype: torch.dtype | None = None) -> dict:
    return {
        k: v.detach().to("cuda", dtype if (dtype and v.is_floating_point()) else v.dtype)
        for k, v in t.items()
    }


def with_grads(fn, t: dict, grad_out: torch.Tensor) -> list[torch.Tensor]:
    leaves = {k: t[k].detach().requires_grad_() for k in FLOATS}
    out = call(fn, {**t, **leaves})
    return [out, *torch.autograd.grad(out, list(leaves.values()), grad_out)]


def test_gradcheck_cuda():
    t = to_cuda(
        make_inputs(levels=((4, 5), (2, 3), (1, 1)), heads=2, channels=3, queries=3, points=2, batch=2)
    )
    args = [t[k].requires_grad_(k in FLOATS) for k in ARG_NAMES]
    assert torch.autograd.gradcheck(ms_deform_attn, args, eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("trial", range(10))
def test_cuda_matches_cpu_and_reference_float64(trial):
    t = make_inputs(**random_config(trial))
    grad_out = torch.randn(call(ms_deform_attn_reference, t).shape, dtype=torch.float64)
    cpu = with_grads(ms_deform_attn, t, grad_out)
    ref = with_grads(ms_deform_attn_reference, t, grad_out)
    gpu = with_grads(ms_deform_attn, to_cuda(t), grad_out.cuda())
    for a, b, c in zip(gpu, cpu, ref):
        torch.testing.assert_close(a.cpu(), b, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(a.cpu(), c, rtol=1e-10, atol=1e-10)


def test_empty_and_non_contiguous_cuda():
    t = to_cuda(make_inputs(levels=((3, 4), (2, 2)), heads=2, channels=3, queries=5, points=2, batch=0))
    assert call(ms_deform_attn, t).shape == (0, 5, 6)
    t = to_cuda(make_inputs(levels=((5, 7), (3, 2)), heads=3, channels=4, queries=9, points=2, batch=2))
    nc = {**t, "value": t["value"].transpose(1, 3).contiguous().transpose(1, 3)}
    torch.testing.assert_close(call(ms_deform_attn, nc), call(ms_deform_attn_reference, t))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_precision_close_to_float64(dtype):
    # Inputs representable in `dtype`: what remains is float32 accumulation and the final rounding.
    t = make_inputs(levels=((17, 23), (9, 12), (5, 6), (3, 3)), heads=8, channels=32, queries=50, points=4)
    t = {k: v.to(dtype).double() if v.is_floating_point() else v for k, v in t.items()}
    grad_out = torch.randn(1, 50, 256, dtype=torch.float64).to(dtype).double()
    want = with_grads(ms_deform_attn_reference, t, grad_out)
    got = with_grads(ms_deform_attn, to_cuda(t, dtype), grad_out.to("cuda", dtype))
    tol = {torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 5e-2}[dtype]
    for a, b in zip(got, want):
        assert a.dtype == dtype
        scale = b.abs().max().clamp(min=1)
        assert (a.double().cpu() - b).abs().max() <= tol * scale


def test_autocast_runs_in_float32():
    torch.manual_seed(0)
    mod = MultiScaleDeformableAttention(embed_dim=32, num_heads=4, num_levels=2, num_points=2).cuda()
    shapes, starts = torch.tensor([[5, 6], [3, 3]], device="cuda"), torch.tensor([0, 30], device="cuda")
    x, query, ref = (
        torch.randn(2, 39, 32, device="cuda"),
        torch.randn(2, 7, 32, device="cuda"),
        torch.rand(2, 7, 2, 2),
    )
    with torch.autocast("cuda", dtype=torch.float16):
        out = mod(query, ref.cuda(), x, shapes, starts)
    out.float().sum().backward()
    torch.testing.assert_close(out.float(), mod(query, ref.cuda(), x, shapes, starts), rtol=1e-2, atol=1e-2)


def test_runs_on_the_current_stream():
    t = to_cuda(
        make_inputs(levels=((9, 11), (4, 5)), heads=4, channels=8, queries=30, points=4, dtype=torch.float32)
    )
    want = call(ms_deform_attn, t)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        got = call(ms_deform_attn, t)
    torch.cuda.current_stream().wait_stream(stream)
    torch.testing.assert_close(got, want)
