"""ms_deform_attn on CPU: parity with the grid_sample reference, gradcheck, registration,
and MultiScaleDeformableAttention against an independent version of the official forward."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from msda_cases import ARG_NAMES, call, make_inputs, random_config

from densenets.ops import MultiScaleDeformableAttention, ms_deform_attn, ms_deform_attn_reference


def grads(fn, t: dict, grad_out: torch.Tensor) -> tuple[torch.Tensor, ...]:
    leaves = [t[k].detach().requires_grad_() for k in ("value", "sampling_locations", "attention_weights")]
    args = {**t, "value": leaves[0], "sampling_locations": leaves[1], "attention_weights": leaves[2]}
    out = call(fn, args)
    return (out, *torch.autograd.grad(out, leaves, grad_out))


def assert_match_reference(t: dict, rtol: float = 1e-10, atol: float = 1e-10) -> None:
    grad_out = torch.randn(call(ms_deform_attn_reference, t).shape, dtype=t["value"].dtype)
    got, want = grads(ms_deform_attn, t, grad_out), grads(ms_deform_attn_reference, t, grad_out)
    for name, a, b in zip(("output", "grad value", "grad locations", "grad weights"), got, want):
        torch.testing.assert_close(a, b, rtol=rtol, atol=atol, msg=lambda m, name=name: f"{name}: {m}")


def test_op_is_registered():
    assert hasattr(torch.ops.densenets, "ms_deform_attn"), "densenets._C lacks ms_deform_attn: rebuild it"
    assert hasattr(torch.ops.densenets, "ms_deform_attn_backward")


@pytest.mark.parametrize("trial", range(10))
def test_matches_reference_random_configs_float64(trial):
    # 1-5 levels with 1x1 and odd sizes, 1-8 heads and points, odd channel counts,
    # locations up to 0.3 outside [0, 1].
    assert_match_reference(make_inputs(**random_config(trial)))


def test_matches_reference_float32():
    t = make_inputs(
        levels=((17, 23), (9, 12), (5, 6), (3, 3)),
        heads=8,
        channels=32,
        queries=40,
        points=4,
        dtype=torch.float32,
    )
    assert_match_reference(t, rtol=1e-4, atol=2e-4)  # location grads sum cancelling terms


def test_far_outside_and_on_the_border():
    # Points far outside read zero and get zero gradients; points on the level border
    # (x = 0, y = 1: half a pixel outside the outer pixel centres) match grid_sample.
    t = make_inputs(levels=((4, 5), (1, 1)), heads=2, channels=3, queries=6, points=3)
    loc = t["sampling_locations"]
    loc[:, 0] = 5.0
    loc[:, 1] = -3.0
    loc[:, 2, ..., 0] = 0.0
    loc[:, 3, ..., 1] = 1.0
    assert_match_reference(t)
    out, _, grad_loc, grad_w = grads(ms_deform_attn, t, torch.ones(1, 6, 6, dtype=torch.float64))
    assert out[:, :2].abs().max() == 0 and grad_loc[:, :2].abs().max() == 0 and grad_w[:, :2].abs().max() == 0


def test_on_pixel_centres():
    # On a pixel centre the location gradient jumps (grid_sample may land on either side
    # after rounding); the output and the other gradients are continuous there.
    t = make_inputs(levels=((4, 5), (2, 2)), heads=2, channels=3, queries=4, points=2)
    t["sampling_locations"][..., 0, :, 0] = 1.5 / 5
    t["sampling_locations"][..., 0, :, 1] = 2.5 / 4
    grad_out = torch.randn(1, 4, 6, dtype=torch.float64)
    got, want = grads(ms_deform_attn, t, grad_out), grads(ms_deform_attn_reference, t, grad_out)
    for i in (0, 1, 3):
        torch.testing.assert_close(got[i], want[i], rtol=1e-10, atol=1e-10)


def test_empty_batch_and_no_queries():
    for batch, queries in ((0, 5), (2, 0)):
        t = make_inputs(levels=((3, 4), (2, 2)), heads=2, channels=3, queries=queries, points=2, batch=batch)
        out, gv, gl, gw = grads(ms_deform_attn, t, torch.ones(batch, queries, 6, dtype=torch.float64))
        assert out.shape == (batch, queries, 6)
        assert gv.shape == t["value"].shape and gv.abs().sum() == 0
        assert gl.shape == t["sampling_locations"].shape and gw.shape == t["attention_weights"].shape


def test_non_contiguous_inputs():
    t = make_inputs(levels=((5, 7), (3, 2)), heads=3, channels=4, queries=9, points=2, batch=2)
    nc = {
        **t,
        # Same values, other strides: a transposed copy viewed back, and slices of larger tensors.
        "value": t["value"].transpose(1, 3).contiguous().transpose(1, 3),
        "sampling_locations": torch.cat([t["sampling_locations"]] * 2, dim=-1)[..., :2],
        "attention_weights": torch.stack([t["attention_weights"]] * 2, dim=0)[1],
        "spatial_shapes": torch.cat([t["spatial_shapes"]] * 2, dim=1)[:, :2],
    }
    assert not nc["value"].is_contiguous() and not nc["sampling_locations"].is_contiguous()
    assert not nc["spatial_shapes"].is_contiguous()
    torch.testing.assert_close(
        call(ms_deform_attn, nc), call(ms_deform_attn_reference, t), rtol=1e-12, atol=1e-12
    )
    assert_match_reference(nc)


def test_gradcheck_float64():
    t = make_inputs(levels=((4, 5), (2, 3), (1, 1)), heads=2, channels=3, queries=3, points=2, batch=2)
    args = [
        t[k].detach().requires_grad_(k in ("value", "sampling_locations", "attention_weights"))
        for k in ARG_NAMES
    ]
    assert torch.autograd.gradcheck(ms_deform_attn, args, eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_backward_split_over_threads(threads):
    # 1 image x 1 head (one (n, m) pair): the queries are split into per-thread parts
    # whose grad_value copies are summed; 3 heads x 1 image: uneven ownership.
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for heads in (1, 3):
            assert_match_reference(
                make_inputs(levels=((6, 7), (3, 4)), heads=heads, channels=5, queries=31, points=3)
            )
    finally:
        torch.set_num_threads(old)


def test_bfloat16_computes_in_float32():
    t = make_inputs(
        levels=((9, 11), (5, 6)), heads=4, channels=16, queries=20, points=4, dtype=torch.bfloat16
    )
    t32 = {k: v.float() if v.is_floating_point() else v for k, v in t.items()}
    out = call(ms_deform_attn, t)
    assert out.dtype == torch.bfloat16
    # Only the final rounding differs from float32 on the same (bfloat16-valued) inputs.
    torch.testing.assert_close(out.float(), call(ms_deform_attn_reference, t32), rtol=8e-3, atol=8e-3)
    _, gv, gl, gw = grads(ms_deform_attn, t, torch.ones_like(out))
    _, gv32, gl32, gw32 = grads(ms_deform_attn_reference, t32, torch.ones_like(out, dtype=torch.float32))
    for a, b in ((gv, gv32), (gl, gl32), (gw, gw32)):
        assert a.dtype == torch.bfloat16
        torch.testing.assert_close(a.float(), b, rtol=2e-2, atol=2e-2)


def test_autocast_runs_in_float32():
    t = make_inputs(levels=((5, 6),), heads=2, channels=8, queries=7, points=2, dtype=torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = call(ms_deform_attn, t)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, call(ms_deform_attn_reference, t))


def test_opcheck():
    t = make_inputs(levels=((4, 5), (2, 2)), heads=2, channels=3, queries=4, points=2, batch=2)
    args = tuple(t[k].requires_grad_(t[k].is_floating_point()) for k in ARG_NAMES)
    torch.library.opcheck(torch.ops.densenets.ms_deform_attn.default, args)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda t: {**t, "value": t["value"][0]}, "value must be"),
        (lambda t: {**t, "spatial_shapes": t["spatial_shapes"].int()}, "spatial_shapes must be int64"),
        (lambda t: {**t, "spatial_shapes": t["spatial_shapes"][:, :1]}, r"spatial_shapes must be \(L, 2\)"),
        (lambda t: {**t, "level_start_index": t["level_start_index"][:1]}, "level_start_index shape"),
        (
            lambda t: {**t, "sampling_locations": t["sampling_locations"][:, :, :1]},
            "sampling_locations shape",
        ),
        (lambda t: {**t, "attention_weights": t["attention_weights"][..., :1]}, "attention_weights shape"),
        (lambda t: {**t, "attention_weights": t["attention_weights"].float()}, "attention_weights has dtype"),
        (
            lambda t: {**t, "sampling_locations": t["sampling_locations"].to("meta")},
            "sampling_locations is on",
        ),
        (lambda t: {**t, "value": t["value"][:, :-1]}, "cover 26 pixels but value has S=25"),
    ],
    ids=[
        "value-dims",
        "shapes-dtype",
        "shapes-dims",
        "starts",
        "locations",
        "weights",
        "dtype",
        "device",
        "pixels",
    ],
)
def test_clear_errors(change, message):
    t = change(make_inputs(levels=((4, 5), (3, 2)), heads=2, channels=3, queries=4, points=2))
    with pytest.raises((ValueError, TypeError), match=message):
        call(ms_deform_attn, t)


def test_kernel_checks_direct_calls():
    t = make_inputs(levels=((4, 5), (3, 2)), heads=2, channels=3, queries=4, points=2)
    bad = {**t, "level_start_index": torch.tensor([0, 21])}
    with pytest.raises(RuntimeError, match="does not fit in value's 26 pixels"):
        torch.ops.densenets.ms_deform_attn(*(bad[k] for k in ARG_NAMES))


def test_fallback_warns_once_and_matches():
    code = (
        "import sys, warnings\n"
        "sys.modules['densenets._C'] = None\n"
        "import torch\n"
        "from densenets.ops import ms_deform_attn\n"
        "v = torch.ones(1, 6, 1, 2, dtype=torch.float64)\n"
        "shapes, starts = torch.tensor([[2, 3]]), torch.tensor([0])\n"
        "loc = torch.full((1, 1, 1, 1, 1, 2), 0.5, dtype=torch.float64)\n"
        "w = torch.full((1, 1, 1, 1, 1), 0.25, dtype=torch.float64)\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    outs = [ms_deform_attn(v, shapes, starts, loc, w) for _ in range(3)]\n"
        "assert len(caught) == 1, [str(c.message) for c in caught]\n"
        "assert 'grid_sample reference' in str(caught[0].message)\n"
        "assert outs[0].tolist() == [[[0.25, 0.25]]], outs[0]\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr


# MultiScaleDeformableAttention --------------------------------------------------------

OFFICIAL_KEYS = [
    "sampling_offsets.weight",
    "sampling_offsets.bias",
    "attention_weights.weight",
    "attention_weights.bias",
    "value_proj.weight",
    "value_proj.bias",
    "output_proj.weight",
    "output_proj.bias",
]


def gather_bilinear(v: torch.Tensor, px: torch.Tensor, py: torch.Tensor) -> torch.Tensor:
    """v (B, C, h, w) read at pixel coordinates px, py (B, K) with zero padding -> (B, C, K)."""
    b, c, h, w = v.shape
    out = v.new_zeros(b, c, px.shape[1])
    x0, y0 = px.floor(), py.floor()
    for yi in (y0, y0 + 1):
        for xi in (x0, x0 + 1):
            weight = (1 - (px - xi).abs()) * (1 - (py - yi).abs())
            valid = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
            index = (yi.clamp(0, h - 1) * w + xi.clamp(0, w - 1)).long()
            picked = v.flatten(2).gather(2, index[:, None].expand(b, c, -1))
            out = out + picked * (weight * valid)[:, None]
    return out


def official_forward(mod, query, ref, x, shapes, starts, mask=None):
    """Deformable DETR's MSDeformAttn.forward, written out with explicit bilinear gathers."""
    n, q, e = query.shape
    heads, levels, points = mod.num_heads, mod.num_levels, mod.num_points
    c = e // heads
    value = F.linear(x, mod.value_proj.weight, mod.value_proj.bias)
    if mask is not None:
        value = value * (~mask)[..., None]
    off = F.linear(query, mod.sampling_offsets.weight, mod.sampling_offsets.bias).view(
        n, q, heads, levels, points, 2
    )
    attn = F.linear(query, mod.attention_weights.weight, mod.attention_weights.bias).view(n, q, heads, -1)
    attn = attn.softmax(-1).view(n, q, heads, levels, points)
    out = value.new_zeros(n, heads, c, q)
    for lvl in range(levels):
        h, w = (int(s) for s in shapes[lvl])
        if ref.shape[-1] == 2:
            loc = ref[:, :, None, lvl, None] + off[:, :, :, lvl] / torch.tensor([w, h], dtype=off.dtype)
        else:
            loc = (
                ref[:, :, None, lvl, None, :2]
                + off[:, :, :, lvl] / points * ref[:, :, None, lvl, None, 2:] * 0.5
            )
        start = int(starts[lvl])
        v = value[:, start : start + h * w].reshape(n, h, w, heads, c).permute(0, 3, 4, 1, 2)
        v = v.reshape(n * heads, c, h, w)
        loc = loc.permute(0, 2, 1, 3, 4).reshape(n * heads, q * points, 2)  # (N * M, Q * P, 2)
        sampled = gather_bilinear(v, loc[..., 0] * w - 0.5, loc[..., 1] * h - 0.5).view(
            n, heads, c, q, points
        )
        a = attn[:, :, :, lvl].permute(0, 2, 1, 3)[:, :, None]  # (N, M, 1, Q, P)
        out = out + (sampled * a).sum(-1)
    out = out.reshape(n, heads * c, q).transpose(1, 2)
    return F.linear(out, mod.output_proj.weight, mod.output_proj.bias)


def test_module_parameter_names_and_initialisation():
    mod = MultiScaleDeformableAttention(embed_dim=64, num_heads=8, num_levels=3, num_points=2)
    assert list(mod.state_dict()) == OFFICIAL_KEYS
    assert mod.sampling_offsets.weight.abs().sum() == 0
    assert mod.attention_weights.weight.abs().sum() == 0 and mod.attention_weights.bias.abs().sum() == 0
    ring = mod.sampling_offsets.bias.view(8, 3, 2, 2)
    # Head h points at angle 2*pi*h/8, scaled onto the unit square; point p at distance p + 1.
    expected = {0: (1, 0), 1: (1, 1), 2: (0, 1), 3: (-1, 1), 4: (-1, 0), 6: (0, -1), 7: (1, -1)}
    for head, (ex, ey) in expected.items():
        for lvl in range(3):
            for p in range(2):
                torch.testing.assert_close(
                    ring[head, lvl, p], torch.tensor([ex, ey]) * (p + 1.0), atol=1e-5, rtol=0
                )
    bound = math.sqrt(6 / (64 + 64))  # Xavier uniform
    assert mod.value_proj.weight.abs().max() <= bound and mod.value_proj.bias.abs().sum() == 0


@pytest.mark.parametrize("ref_dim", [2, 4], ids=["points", "boxes"])
def test_module_matches_official_forward(ref_dim):
    torch.manual_seed(0)
    mod = MultiScaleDeformableAttention(embed_dim=48, num_heads=4, num_levels=3, num_points=3).double()
    for p in mod.parameters():  # away from the initialisation, so that every term matters
        torch.nn.init.normal_(p, std=0.2)
    shapes = torch.tensor([[6, 7], [3, 4], [1, 2]])
    starts = torch.tensor([0, 42, 54])
    x = torch.randn(2, 56, 48, dtype=torch.float64)
    query = torch.randn(2, 10, 48, dtype=torch.float64)
    ref = torch.rand(2, 10, 3, ref_dim, dtype=torch.float64)
    mask = torch.rand(2, 56) < 0.2
    got = mod(query, ref, x, shapes, starts, mask)
    torch.testing.assert_close(
        got, official_forward(mod, query, ref, x, shapes, starts, mask), rtol=1e-10, atol=1e-10
    )
    got.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in mod.parameters())


def test_module_compiles():
    torch.manual_seed(0)
    mod = MultiScaleDeformableAttention(embed_dim=32, num_heads=4, num_levels=2, num_points=2)
    shapes, starts = torch.tensor([[5, 6], [3, 3]]), torch.tensor([0, 30])
    x, query = torch.randn(2, 39, 32), torch.randn(2, 7, 32)
    ref = torch.rand(2, 7, 2, 2)
    compiled = torch.compile(mod, backend="aot_eager", fullgraph=True)
    out = compiled(query, ref, x, shapes, starts)
    torch.testing.assert_close(out, mod(query, ref, x, shapes, starts))
    out.sum().backward()
    assert mod.sampling_offsets.weight.grad.abs().sum() > 0
