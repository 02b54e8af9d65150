"""roi_align on CPU: parity with torchvision (output and input gradient), gradcheck, edge cases."""

from __future__ import annotations

import pytest
import torch
import torchvision

from densenets.ops import extension_available, roi_align


def make_rois(num: int, batch: int, extent: float, dtype=torch.float64, seed: int = 0) -> torch.Tensor:
    """Boxes of 0 to 0.6 x extent, some reaching outside [0, extent], a few degenerate."""
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(num, 2, generator=g, dtype=dtype) * extent * 1.2 - 0.1 * extent
    wh = torch.rand(num, 2, generator=g, dtype=dtype) * extent * 0.6
    wh[::7] = 0  # zero-size boxes
    idx = torch.randint(0, batch, (num, 1), generator=g).to(dtype)
    return torch.cat((idx, xy, xy + wh), 1)


def forward_backward(fn, x, rois, *args):
    x = x.detach().clone().requires_grad_(True)
    out = fn(x, rois, *args)
    weight = torch.linspace(-1, 2, out.numel(), dtype=out.dtype).view_as(out)
    (grad,) = torch.autograd.grad((out * weight).sum(), x)
    return out, grad


def test_uses_the_compiled_kernel():
    assert extension_available() and hasattr(torch.ops.densenets, "roi_align")


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [0, 1, 2, -1])
@pytest.mark.parametrize("output_size", [7, (3, 5)])
def test_matches_torchvision_float64(aligned, sampling_ratio, output_size):
    torch.manual_seed(0)
    x = torch.randn(3, 5, 23, 31, dtype=torch.float64)
    rois = make_rois(40, 3, extent=60.0)
    args = (output_size, 0.5, sampling_ratio, aligned)
    got, got_grad = forward_backward(roi_align, x, rois, *args)
    want, want_grad = forward_backward(torchvision.ops.roi_align, x, rois, *args)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    torch.testing.assert_close(got_grad, want_grad, rtol=1e-12, atol=1e-12)


def test_matches_torchvision_float32_feature_pyramid_sizes():
    # A P2-like map with many RoIs: float32 results equal torchvision's (same arithmetic).
    torch.manual_seed(1)
    x = torch.randn(2, 16, 50, 68)
    rois = make_rois(300, 2, extent=270.0, dtype=torch.float32, seed=1)
    got, got_grad = forward_backward(roi_align, x, rois, 7, 0.25, 2, False)
    want, want_grad = forward_backward(torchvision.ops.roi_align, x, rois, 7, 0.25, 2, False)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    torch.testing.assert_close(got_grad, want_grad, rtol=1e-5, atol=1e-5)


def test_gradcheck():
    torch.manual_seed(2)
    x = torch.randn(2, 3, 9, 11, dtype=torch.float64, requires_grad=True)
    rois = make_rois(6, 2, extent=20.0, seed=2)
    assert torch.autograd.gradcheck(lambda t: roi_align(t, rois, 3, 1.0, 2, True), (x,))


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [0, 2])
def test_channels_last_matches_torchvision(aligned, sampling_ratio):
    # Channels-last features are read in place by a separate kernel; its gradient is
    # channels-last too.
    torch.manual_seed(3)
    x = torch.randn(3, 37, 19, 26, dtype=torch.float64)
    rois = make_rois(30, 3, extent=50.0, seed=3)
    args = (7, 0.5, sampling_ratio, aligned)
    cl = x.contiguous(memory_format=torch.channels_last)
    got, got_grad = forward_backward(roi_align, cl, rois, *args)
    want, want_grad = forward_backward(torchvision.ops.roi_align, x, rois, *args)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(got_grad, want_grad, rtol=1e-12, atol=1e-12)
    assert got_grad.is_contiguous(memory_format=torch.channels_last)


def test_no_rois():
    x = torch.randn(2, 4, 10, 10, requires_grad=True)
    out = roi_align(x, torch.zeros(0, 5), 7, 1.0, 2, True)
    assert out.shape == (0, 4, 7, 7)
    out.sum().backward()
    assert torch.equal(x.grad, torch.zeros_like(x))


def test_bad_batch_index_names_the_roi():
    x = torch.randn(1, 2, 8, 8)
    rois = torch.tensor([[0, 1, 1, 4, 4], [3, 1, 1, 4, 4]], dtype=torch.float32)
    with pytest.raises(RuntimeError, match="RoI 1 has batch index 3"):
        roi_align(x, rois, 2)


@pytest.mark.parametrize("channels_last", [False, True])
def test_opcheck(channels_last):
    x = torch.randn(2, 3, 9, 11, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    rois = make_rois(5, 2, extent=20.0)
    torch.library.opcheck(torch.ops.densenets.roi_align.default, (x.requires_grad_(True), rois, 1.0, 3, 3, 2, True))


def test_bfloat16_is_pooled_in_float32():
    # torchvision's CPU kernel has no bfloat16; ours pools in float32 and casts back.
    x = torch.randn(1, 2, 8, 8).to(torch.bfloat16)
    rois = torch.tensor([[0, 1, 1, 6, 6]], dtype=torch.float32)
    got = roi_align(x, rois, 2, 1.0, 2, True)
    assert got.dtype == torch.bfloat16
    want = torchvision.ops.roi_align(x.float(), rois, 2, 1.0, 2, True)
    torch.testing.assert_close(got.float(), want, rtol=1e-2, atol=1e-2)
