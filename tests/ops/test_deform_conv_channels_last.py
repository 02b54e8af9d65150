"""deform_conv2d CPU forward, channels-last path: output layouts, block splits, parity.

The forward of layers with >= 8 channels per group reads the input channels-last, fills
columns block by block and writes the output with the GEMM in place: NCHW for an NCHW
input (blocks never straddle two images), channels-last for a channels-last input (blocks
span images). Both must equal torchvision on every shape.
"""

from __future__ import annotations

import pytest
import torch
import torchvision
from dcn_cases import assert_all_close, make_inputs, run

from densenets.ops import deform_conv2d

# (N, C_in, C_out, H, W, kernel, stride, padding, dilation, groups, deform_groups), all with
# >= 8 channels per group, so that the channels-last forward runs by default.
WIDE = [
    (2, 16, 24, 13, 11, (3, 3), (1, 1), (1, 1), (1, 1), 1, 1),
    (3, 32, 16, 9, 14, (3, 3), (2, 2), (1, 1), (1, 1), 2, 4),
    (1, 16, 16, 7, 10, (3, 2), (1, 2), (2, 0), (2, 1), 2, 2),
]
WIDE_IDS = ["odd-size-3x3", "stride2-groups2-dg4", "dilation-3x2"]
# Column budgets: default blocks; 2000 elements (a few positions, blocks split images and,
# channels-last, cross them); 100 (one position per block).
BUDGETS = [None, "2000", "100"]


def _channels_last(tensors: dict) -> dict:
    x = tensors["input"].detach().to(memory_format=torch.channels_last).requires_grad_()
    return {**tensors, "input": x}


@pytest.mark.parametrize("budget", BUDGETS, ids=["default", "small-blocks", "one-position"])
@pytest.mark.parametrize("mask", [False, True], ids=["v1", "v2"])
@pytest.mark.parametrize("cfg", WIDE, ids=WIDE_IDS)
def test_channels_last_input_gives_channels_last_output_equal_to_nchw(monkeypatch, cfg, mask, budget):
    if budget is not None:
        monkeypatch.setenv("DENSENETS_DEFORM_CONV_BUDGET", budget)
    tensors, params = make_inputs(cfg, mask=mask, offset_scale=3.0, seed=4)
    nchw = run(deform_conv2d, tensors, params)
    nhwc = run(deform_conv2d, _channels_last(tensors), params)
    assert nchw[0].is_contiguous()
    assert nhwc[0].is_contiguous(memory_format=torch.channels_last) and not nhwc[0].is_contiguous()
    assert_all_close(nhwc, nchw, rtol=1e-12, atol=1e-12)
    assert_all_close(nchw, run(torchvision.ops.deform_conv2d, tensors, params), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("threads", [1, 2])
def test_nchw_blocks_per_image_on_threads(monkeypatch, threads):
    # 7 images of 10 x 9 = 90 positions in blocks of 16 (the rounding unit): 6 blocks
    # per image, the last of 10 positions; torchvision decides.
    monkeypatch.setenv("DENSENETS_DEFORM_CONV_BUDGET", str(16 * 8 * 9))
    cfg = (7, 8, 16, 10, 9, (3, 3), (1, 1), (1, 1), (1, 1), 1, 1)
    tensors, params = make_inputs(cfg, dtype=torch.float32, offset_scale=2.0, seed=6)
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        got = run(deform_conv2d, tensors, params)
    finally:
        torch.set_num_threads(saved)
    assert_all_close(got, run(torchvision.ops.deform_conv2d, tensors, params), rtol=1e-4, atol=1e-4)


def test_empty_batch_channels_last():
    tensors, params = make_inputs(WIDE[0])
    tensors = {
        k: v[:0].detach().requires_grad_() if k in ("input", "offset", "mask") else v
        for k, v in tensors.items()
    }
    out, grad_input, *_ = run(deform_conv2d, _channels_last(tensors), params)
    assert out.shape == (0, 24, 13, 11) and grad_input.shape == (0, 16, 13, 11)


def test_ambiguous_channels_last_input_gives_nchw_output():
    # 1 x 1 images are both NCHW- and channels-last-contiguous: the output is NCHW (as the
    # rule "channels-last and not contiguous" says, in the kernel and the fake alike).
    x = torch.randn(2, 16, 1, 1).to(memory_format=torch.channels_last)
    out = deform_conv2d(x, torch.zeros(2, 18, 1, 1), torch.randn(8, 16, 3, 3), padding=1)
    assert out.is_contiguous()


def test_reduced_precision_channels_last():
    tensors, params = make_inputs(WIDE[1], dtype=torch.float32, seed=2)
    exact = {k: v.detach().bfloat16().float() for k, v in tensors.items()}
    want = deform_conv2d(
        exact["input"], exact["offset"], exact["weight"], exact["bias"], mask=exact["mask"], **params
    )
    bf = {k: v.bfloat16() for k, v in exact.items()}
    x = bf["input"].to(memory_format=torch.channels_last)
    got = deform_conv2d(x, bf["offset"], bf["weight"], bf["bias"], mask=bf["mask"], **params)
    assert got.dtype == torch.bfloat16 and got.is_contiguous(memory_format=torch.channels_last)
    eps = torch.finfo(torch.bfloat16).eps
    torch.testing.assert_close(got.float(), want, rtol=eps, atol=eps)


@pytest.mark.parametrize("layout", ["nhwc", "nchw"])
def test_opcheck_channels_last(monkeypatch, layout):
    # The fake (shape-only) kernel must give the real output's strides, on both CPU paths.
    monkeypatch.setenv("DENSENETS_DEFORM_CONV_LAYOUT", layout)
    tensors, params = make_inputs(WIDE[1], dtype=torch.float64)
    args = (
        _channels_last(tensors)["input"],
        tensors["offset"],
        tensors["weight"],
        tensors["mask"],
        tensors["bias"],
        *params["stride"],
        *params["padding"],
        *params["dilation"],
    )
    torch.library.opcheck(torch.ops.densenets.deform_conv2d.default, args)
