"""deform_conv2d on CUDA: gradcheck, parity with CPU and torchvision, half precision.

Every test here is marked `cuda` and is skipped (with the reason) where no GPU exists.
"""

from __future__ import annotations

import pytest
import torch
import torchvision
from dcn_cases import CONFIGS, IDS, assert_all_close, make_inputs, run

from densenets.ops import deform_conv2d

pytestmark = pytest.mark.cuda


def to_cuda(tensors, dtype=None):
    return {
        k: None if v is None else v.detach().to("cuda", dtype or v.dtype).requires_grad_()
        for k, v in tensors.items()
    }


@pytest.mark.parametrize("mask", [False, True], ids=["v1", "v2"])
@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
def test_gradcheck_cuda(cfg, mask):
    n, c_in, c_out, h, w, kernel, stride, pad, dil, groups, dg = cfg
    small = (1, c_in, c_out, min(h, 6), min(w, 6), kernel, stride, pad, dil, groups, dg)
    tensors = to_cuda(make_inputs(small, mask=mask, offset_scale=1.5, seed=5)[0])
    params = make_inputs(small)[1]
    names = [k for k, v in tensors.items() if v is not None]

    def fn(*args):
        t = dict(zip(names, args))
        return deform_conv2d(t["input"], t["offset"], t["weight"], t["bias"], mask=t.get("mask"), **params)

    assert torch.autograd.gradcheck(fn, tuple(tensors[k] for k in names), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("mask", [False, True], ids=["v1", "v2"])
@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
def test_cuda_matches_cpu_and_torchvision(cfg, mask):
    tensors, params = make_inputs(cfg, dtype=torch.float64, mask=mask, offset_scale=3.0 * cfg[3])
    cpu = run(deform_conv2d, tensors, params)
    gpu = [t.cpu() for t in run(deform_conv2d, to_cuda(tensors), params)]
    tv = [t.cpu() for t in run(torchvision.ops.deform_conv2d, to_cuda(tensors), params)]
    assert_all_close(gpu, cpu, rtol=1e-10, atol=1e-10)
    assert_all_close(gpu, tv, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_close_to_float32(dtype):
    cfg = (2, 32, 16, 12, 10, (3, 3), (1, 1), (1, 1), (1, 1), 1, 2)
    tensors, params = make_inputs(cfg, dtype=torch.float32, offset_scale=2.0, seed=9)
    # Inputs representable in `dtype`, so that both runs see the same numbers.
    tensors = {k: v.detach().to(dtype).float() for k, v in tensors.items()}
    want = run(deform_conv2d, to_cuda(tensors), params)
    got = run(deform_conv2d, to_cuda(tensors, dtype), params)
    assert all(g.dtype == dtype for g in got)
    tol = 8 * torch.finfo(dtype).eps
    for name, a, b in zip(["output", "input", "offset", "weight", "bias", "mask"], got, want):
        err = (a.float() - b).abs().max() / b.abs().max().clamp(min=1.0)
        assert err < tol, f"{name}: error {err:.3g} (relative to the largest value) >= {tol:.3g} in {dtype}"


def test_autocast_runs_in_half():
    tensors, params = make_inputs(CONFIGS[0], dtype=torch.float32)
    t = to_cuda(tensors)
    with torch.autocast("cuda", dtype=torch.float16):
        out = deform_conv2d(t["input"], t["offset"], t["weight"], t["bias"], mask=t["mask"], **params)
    assert out.dtype == torch.float16
    out.float().sum().backward()
    assert t["offset"].grad.dtype == torch.float32 and torch.isfinite(t["offset"].grad).all()


def test_side_stream_and_empty_batch():
    tensors, params = make_inputs(CONFIGS[1], dtype=torch.float32)
    t = to_cuda(tensors)
    want = run(deform_conv2d, t, params)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        got = run(deform_conv2d, t, params)
    torch.cuda.current_stream().wait_stream(stream)
    assert_all_close(got, want, rtol=0, atol=0)
    empty = {
        k: v[:0].detach().requires_grad_() if k in ("input", "offset", "mask") else v for k, v in t.items()
    }
    out, *_ = run(deform_conv2d, empty, params)
    assert out.shape[0] == 0


@pytest.mark.parametrize("budget", ["1000", "200000"], ids=["chunk-splits-images", "chunk-of-images"])
def test_chunking_and_prime_batch_cuda(monkeypatch, budget):
    cfg = (37, 8, 4, 9, 8, (3, 3), (1, 1), (1, 1), (1, 1), 2, 2)
    tensors, params = make_inputs(cfg, dtype=torch.float64, offset_scale=3.0, seed=2)
    monkeypatch.setenv("DENSENETS_DEFORM_CONV_BUDGET", budget)
    got = [t.cpu() for t in run(deform_conv2d, to_cuda(tensors), params)]
    assert_all_close(got, run(torchvision.ops.deform_conv2d, tensors, params), rtol=1e-10, atol=1e-10)


@pytest.mark.slow
def test_more_than_2_31_elements():
    # input has 2 * 32800^2 > 2^31 elements; channel 1's last rows sit beyond 2^31.
    if torch.cuda.get_device_properties(0).total_memory < 40 * 2**30:
        pytest.skip("needs a GPU with 40 GiB")
    size = 32800
    x = torch.zeros(1, 2, size, size, device="cuda", dtype=torch.float16)
    x[0, 1, -3:, -4:] = torch.arange(12, device="cuda", dtype=torch.float16).view(3, 4)
    weight = torch.ones(1, 2, 1, 1, device="cuda", dtype=torch.float16)
    offset = torch.zeros(1, 2, size, size, device="cuda", dtype=torch.float16)
    offset[0, 1, -2, -3] = 1.0  # pixel (-2, -3) reads (-2, -2) instead
    with torch.no_grad():
        out = deform_conv2d(x, offset, weight)
    assert out[0, 0, -1, -1].item() == 11.0 and out[0, 0, -3, -4].item() == 0.0
    assert out[0, 0, -2, -3].item() == 6.0
