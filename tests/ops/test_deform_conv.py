"""deform_conv2d on CPU: parity with torchvision and the reference, gradcheck, registration."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
import torchvision
from dcn_cases import CONFIGS, IDS, assert_all_close, make_inputs, run

from densenets.ops import deform_conv2d, deform_conv2d_reference, extension_available


def test_extension_is_built():
    assert extension_available(), "densenets._C did not load; run `pip install --no-build-isolation -e .`"
    assert hasattr(torch.ops.densenets, "deform_conv2d")


@pytest.mark.parametrize("mask", [False, True], ids=["v1", "v2"])
@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
def test_matches_torchvision_float64(cfg, mask):
    # Offsets of +-3 * H send many points far outside the image.
    for offset_scale in (2.0, 3.0 * cfg[3]):
        tensors, params = make_inputs(cfg, mask=mask, offset_scale=offset_scale)
        got = run(deform_conv2d, tensors, params)
        want = run(torchvision.ops.deform_conv2d, tensors, params)
        assert_all_close(got, want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
def test_matches_reference_float64(cfg):
    tensors, params = make_inputs(cfg, mask=True, offset_scale=4.0, seed=3)
    assert_all_close(
        run(deform_conv2d, tensors, params),
        run(deform_conv2d_reference, tensors, params),
        rtol=1e-10,
        atol=1e-10,
    )


def test_matches_torchvision_float32_random_configs():
    gen = torch.Generator().manual_seed(7)
    for trial in range(6):
        r = lambda lo, hi: int(torch.randint(lo, hi + 1, (), generator=gen))  # noqa: E731
        groups, dg = r(1, 2), r(1, 2)
        kh, kw = r(1, 3), r(1, 3)
        cfg = (
            r(1, 3),
            4 * groups * dg // 2 * 2,
            2 * groups,
            r(kh + 3, 12),
            r(kw + 3, 12),
            (kh, kw),
            (r(1, 2), r(1, 2)),
            (r(0, 2), r(0, 2)),
            (r(1, 2), r(1, 2)),
            groups,
            dg,
        )
        tensors, params = make_inputs(
            cfg, dtype=torch.float32, mask=bool(trial % 2), offset_scale=3.0, seed=trial
        )
        assert_all_close(
            run(deform_conv2d, tensors, params),
            run(torchvision.ops.deform_conv2d, tensors, params),
            rtol=1e-4,
            atol=1e-4,
        )


@pytest.mark.parametrize("layout", ["nhwc", "nchw"])
@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
def test_forward_layouts_match_torchvision(monkeypatch, cfg, layout):
    # The CPU forward reads the input channels-last when groups hold >= 8 channels;
    # DENSENETS_DEFORM_CONV_LAYOUT forces either path on every configuration.
    monkeypatch.setenv("DENSENETS_DEFORM_CONV_LAYOUT", layout)
    tensors, params = make_inputs(cfg, mask=True, offset_scale=3.0, seed=5)
    assert_all_close(
        run(deform_conv2d, tensors, params),
        run(torchvision.ops.deform_conv2d, tensors, params),
        rtol=1e-10,
        atol=1e-10,
    )


@pytest.mark.parametrize("budget", [None, "4000"], ids=["default-blocks", "blocks-of-13-positions"])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw-input", "channels-last-input"])
def test_wide_groups_use_channels_last_forward(monkeypatch, channels_last, budget):
    # 16 channels per group: the channels-last forward by default; blocks of 4000 column
    # elements hold 13 positions of 288 rows, so blocks split images and rows.
    if budget is not None:
        monkeypatch.setenv("DENSENETS_DEFORM_CONV_BUDGET", budget)
    cfg = (2, 32, 24, 11, 13, (3, 3), (1, 2), (1, 1), (1, 1), 2, 2)
    tensors, params = make_inputs(cfg, dtype=torch.float32, mask=True, offset_scale=2.0, seed=2)
    if channels_last:
        tensors["input"] = tensors["input"].detach().to(memory_format=torch.channels_last).requires_grad_()
    got = run(deform_conv2d, tensors, params)
    # The output's memory format follows the input's, as for F.conv2d.
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    assert got[0].is_contiguous(memory_format=fmt)
    assert_all_close(got, run(torchvision.ops.deform_conv2d, tensors, params), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("mask", [False, True], ids=["v1", "v2"])
@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
def test_gradcheck(cfg, mask):
    n, c_in, c_out, h, w, kernel, stride, pad, dil, groups, dg = cfg
    small = (1, c_in, c_out, min(h, 5), min(w, 6), kernel, stride, pad, dil, groups, dg)
    tensors, params = make_inputs(small, mask=mask, offset_scale=1.5, seed=5)
    names = [k for k, v in tensors.items() if v is not None]

    def fn(*args):
        t = dict(zip(names, args))
        return deform_conv2d(t["input"], t["offset"], t["weight"], t["bias"], mask=t.get("mask"), **params)

    # The full Jacobian for the plain 3x3 layer; random projections of it for the others.
    fast = cfg is not CONFIGS[0]
    assert torch.autograd.gradcheck(fn, tuple(tensors[k] for k in names), eps=1e-6, atol=1e-5, fast_mode=fast)


@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
def test_zero_offset_and_unit_mask_is_conv2d(cfg):
    tensors, params = make_inputs(cfg, dtype=torch.float32)
    x, w, b = tensors["input"], tensors["weight"], tensors["bias"]
    offset, mask = torch.zeros_like(tensors["offset"]), torch.ones_like(tensors["mask"])
    groups = cfg[9]
    want = F.conv2d(x, w, b, groups=groups, **params)
    torch.testing.assert_close(deform_conv2d(x, offset, w, b, **params), want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(
        deform_conv2d(x, offset, w, b, mask=mask, **params), want, rtol=1e-5, atol=1e-5
    )


def test_empty_batch():
    tensors, params = make_inputs(CONFIGS[1])
    tensors = {
        k: v[:0].detach().requires_grad_() if k in ("input", "offset", "mask") else v
        for k, v in tensors.items()
    }
    out, grad_input, grad_offset, grad_weight, grad_bias, grad_mask = run(deform_conv2d, tensors, params)
    assert out.shape == (0, 4, 3, 5)
    assert grad_input.shape == tensors["input"].shape and grad_mask.shape == tensors["mask"].shape
    assert grad_weight.abs().sum() == 0 and grad_bias.abs().sum() == 0


def _spread(t):
    """The values of `t` in a non-contiguous view (every other element of a wider tensor)."""
    wide = t.new_zeros(*t.shape[:-1], 2 * t.shape[-1])
    wide[..., ::2] = t.detach()
    return wide[..., ::2].requires_grad_()


def test_non_contiguous_inputs():
    tensors, params = make_inputs(CONFIGS[0], dtype=torch.float32, seed=11)
    want = run(deform_conv2d, tensors, params)
    strided = {k: _spread(v) for k, v in tensors.items()}
    strided["input"] = tensors["input"].detach().to(memory_format=torch.channels_last).requires_grad_()
    assert not any(t.is_contiguous() for t in strided.values())
    assert_all_close(run(deform_conv2d, strided, params), want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("budget", ["4000", "200000"], ids=["chunk-splits-images", "chunk-of-images"])
def test_chunking_and_prime_batch(monkeypatch, budget):
    # A small column budget forces chunks that split images (4000) or hold several (200000).
    cfg = (37, 8, 4, 9, 8, (3, 3), (1, 1), (1, 1), (1, 1), 2, 2)
    tensors, params = make_inputs(cfg, dtype=torch.float64, offset_scale=3.0, seed=2)
    monkeypatch.setenv("DENSENETS_DEFORM_CONV_BUDGET", budget)
    got = run(deform_conv2d, tensors, params)
    assert_all_close(got, run(torchvision.ops.deform_conv2d, tensors, params), rtol=1e-10, atol=1e-10)


def test_reduced_precision_computes_in_float32():
    tensors, params = make_inputs(CONFIGS[0], dtype=torch.float32, seed=4)
    for dtype in (torch.bfloat16, torch.float16):
        # Inputs representable in `dtype`, so that both runs see the same numbers.
        exact = {k: v.detach().to(dtype).float().requires_grad_() for k, v in tensors.items()}
        want = run(deform_conv2d, exact, params)
        got = run(deform_conv2d, {k: v.detach().to(dtype).requires_grad_() for k, v in exact.items()}, params)
        assert all(g.dtype == dtype for g in got)
        # Computed in float32: only the final rounding to `dtype` differs.
        eps = torch.finfo(dtype).eps
        for a, b in zip(got, want):
            torch.testing.assert_close(a.float(), b, rtol=eps, atol=eps)


def test_autocast_cpu_runs_in_bfloat16():
    tensors, params = make_inputs(CONFIGS[0], dtype=torch.float32, seed=4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = deform_conv2d(
            tensors["input"],
            tensors["offset"],
            tensors["weight"],
            tensors["bias"],
            mask=tensors["mask"],
            **params,
        )
    assert out.dtype == torch.bfloat16
    out.float().sum().backward()
    assert tensors["offset"].grad is not None and tensors["offset"].grad.dtype == torch.float32


@pytest.mark.parametrize("mask", [False, True], ids=["v1", "v2"])
def test_opcheck(mask):
    tensors, params = make_inputs(CONFIGS[1], dtype=torch.float64, mask=mask)
    args = (
        tensors["input"],
        tensors["offset"],
        tensors["weight"],
        tensors["mask"],
        tensors["bias"],
        *params["stride"],
        *params["padding"],
        *params["dilation"],
    )
    torch.library.opcheck(torch.ops.densenets.deform_conv2d.default, args)


def test_compile_and_export():
    from densenets.ops import ModulatedDeformConv2d

    torch.manual_seed(0)
    layer = ModulatedDeformConv2d(4, 6, 3, padding=1, deform_groups=2)
    torch.nn.init.normal_(layer.conv_offset.weight, std=0.1)
    x = torch.randn(2, 4, 8, 8, requires_grad=True)
    compiled = torch.compile(layer, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(x), layer(x))
    compiled(x).sum().backward()
    assert layer.conv_offset.weight.grad.abs().sum() > 0
    exported = torch.export.export(layer, (x.detach(),))
    assert "densenets.deform_conv2d" in str(exported.graph)
    torch.testing.assert_close(exported.module()(x), layer(x))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda t: {**t, "offset": t["offset"][:, :-2]}, "offset has 16 channels"),
        (lambda t: {**t, "mask": t["mask"][:, :-1]}, "mask shape"),
        (lambda t: {**t, "offset": t["offset"][:, :, :-1]}, "offset shape"),
        (lambda t: {**t, "weight": t["weight"][:, :3]}, "weight shape"),
        (lambda t: {**t, "mask": t["mask"].float()}, "mask has dtype torch.float32"),
        (lambda t: {**t, "offset": t["offset"].to("meta")}, "offset is on meta"),
        (lambda t: {**t, "bias": t["bias"][:-1]}, "bias has 5 elements"),
    ],
    ids=["offset-channels", "mask-channels", "offset-size", "weight-groups", "dtype", "device", "bias"],
)
def test_clear_errors(change, message):
    tensors, params = make_inputs(CONFIGS[0])
    t = change({k: v.detach() for k, v in tensors.items()})
    with pytest.raises((ValueError, TypeError), match=message):
        deform_conv2d(t["input"], t["offset"], t["weight"], t["bias"], mask=t["mask"], **params)


def test_kernel_checks_direct_calls():
    tensors, params = make_inputs(CONFIGS[0])
    t = {k: v.detach() for k, v in tensors.items()}
    with pytest.raises(RuntimeError, match="offset has 17 channels"):
        torch.ops.densenets.deform_conv2d(
            t["input"],
            torch.zeros(2, 17, 7, 9, dtype=torch.float64),
            t["weight"],
            None,
            None,
            1,
            1,
            1,
            1,
            1,
            1,
        )


def test_fallback_warns_once_and_matches():
    code = (
        "import sys, warnings\n"
        "sys.modules['densenets._C'] = None\n"
        "import torch, torchvision\n"
        "from densenets.ops import deform_conv2d, extension_available\n"
        "assert not extension_available()\n"
        "x, w = torch.randn(1, 2, 5, 5, dtype=torch.float64), torch.randn(3, 2, 3, 3, dtype=torch.float64)\n"
        "off = torch.randn(1, 18, 3, 3, dtype=torch.float64)\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    outs = [deform_conv2d(x, off, w) for _ in range(3)]\n"
        "assert len(caught) == 1, [str(c.message) for c in caught]\n"
        "assert 'pip install --no-build-isolation -e .' in str(caught[0].message)\n"
        "torch.testing.assert_close(outs[0], torchvision.ops.deform_conv2d(x, off, w))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr


@pytest.mark.parametrize("size", [1, 5])
def test_output_is_no_view_so_in_place_ops_may_follow(size):
    # The channels-last forward (>= 8 channels per group) once returned a view of its
    # NHWC buffer when the output was 1 x 1, and autograd forbids modifying that in place.
    x = torch.randn(2, 16, size, size, requires_grad=True)
    weight = torch.randn(16, 16, 3, 3, requires_grad=True)
    offset = torch.zeros(2, 18, size, size)
    y = deform_conv2d(x, offset, weight, padding=1)
    torch.relu_(y)
    y.sum().backward()
    expected = torch.nn.functional.conv2d(x.detach(), weight.detach(), padding=1).relu()
    torch.testing.assert_close(y.detach(), expected, rtol=1e-4, atol=1e-4)
    assert x.grad is not None and torch.isfinite(weight.grad).all()


@pytest.mark.parametrize("grad", [True, False], ids=["grad", "no_grad"])
def test_channels_last_forward_with_several_blocks_on_several_threads(monkeypatch, grad):
    # The channels-last forward runs one GEMM per block inside at::parallel_for. Worker
    # threads do not inherit the dispatcher's "below autograd" state, so a weight that
    # requires grad once made them fail ("mm(): functions with out=... don't support
    # automatic differentiation") whenever the output spanned several blocks and the
    # weight was not contiguous (a channels-last model).
    monkeypatch.setenv("DENSENETS_DEFORM_CONV_LAYOUT", "nhwc")
    monkeypatch.setenv("DENSENETS_DEFORM_CONV_BUDGET", "4096")
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(2, 16, 12, 12, generator=gen, dtype=torch.float64)
        weight = torch.randn(16, 16, 3, 3, generator=gen, dtype=torch.float64)
        # channels-last weights, as a `channels_last: true` ResNet holds them
        weight = weight.contiguous(memory_format=torch.channels_last).requires_grad_()
        offset = torch.randn(2, 18, 12, 12, generator=gen, dtype=torch.float64)
        with torch.set_grad_enabled(grad):
            y = deform_conv2d(x, offset, weight, padding=1)
        expected = torchvision.ops.deform_conv2d(x, offset, weight.detach(), padding=1)
    finally:
        torch.set_num_threads(threads)
    torch.testing.assert_close(y.detach(), expected, rtol=1e-10, atol=1e-10)
    assert y.requires_grad == grad
