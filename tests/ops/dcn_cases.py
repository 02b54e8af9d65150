"""Shared cases for the deform_conv2d tests: layer configurations and a runner."""

from __future__ import annotations

import torch

# (N, C_in, C_out, H, W, kernel, stride, padding, dilation, groups, deform_groups)
CONFIGS = [
    (2, 4, 6, 7, 9, (3, 3), (1, 1), (1, 1), (1, 1), 1, 1),
    (1, 6, 4, 8, 5, (3, 2), (2, 1), (0, 1), (1, 2), 2, 3),
    (3, 8, 8, 6, 6, (1, 3), (1, 2), (2, 0), (2, 1), 4, 2),
    (2, 4, 2, 9, 7, (2, 2), (2, 2), (1, 1), (2, 2), 1, 4),
]
IDS = ["3x3", "groups2-dg3-stride-dilation", "groups4-dg2-1x3", "dg4-stride2-dilation2"]


def make_inputs(cfg, dtype=torch.float64, mask=True, offset_scale=2.0, seed=0, device="cpu"):
    n, c_in, c_out, h, w, (kh, kw), stride, pad, dil, groups, dg = cfg
    gen = torch.Generator().manual_seed(seed)
    h_out = (h + 2 * pad[0] - dil[0] * (kh - 1) - 1) // stride[0] + 1
    w_out = (w + 2 * pad[1] - dil[1] * (kw - 1) - 1) // stride[1] + 1
    k = kh * kw

    def rand(*shape, scale=1.0):
        return (torch.randn(*shape, generator=gen, dtype=dtype) * scale).to(device).requires_grad_()

    tensors = {
        "input": rand(n, c_in, h, w),
        "offset": rand(n, 2 * dg * k, h_out, w_out, scale=offset_scale),
        "weight": rand(c_out, c_in // groups, kh, kw),
        "bias": rand(c_out),
        "mask": torch.rand(n, dg * k, h_out, w_out, generator=gen, dtype=dtype).to(device).requires_grad_()
        if mask
        else None,
    }
    return tensors, dict(stride=stride, padding=pad, dilation=dil)


def run(fn, tensors, params, grad_seed=1):
    out = fn(
        tensors["input"],
        tensors["offset"],
        tensors["weight"],
        tensors["bias"],
        mask=tensors["mask"],
        **params,
    )
    leaves = [t for t in tensors.values() if t is not None]
    # Multiples of 1/8: exact in every dtype, so runs in different dtypes get the same gradient.
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(grad_seed), dtype=torch.float64)
    grad = ((grad * 8).round() / 8).to(out.dtype)
    return [out, *torch.autograd.grad(out, leaves, grad.to(out.device))]


def assert_all_close(got, want, **tol):
    names = ["output", "input", "offset", "weight", "bias", "mask"]
    for name, a, b in zip(names, got, want):
        torch.testing.assert_close(a, b, msg=lambda m, name=name: f"{name}: {m}", **tol)
