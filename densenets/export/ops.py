"""Our custom ops in exported graphs.

ONNX (the TorchScript-based exporter, see docs/export.md for why):
- `densenets::roi_align` -> ONNX `RoiAlign` (opset 16: `coordinate_transformation_mode`
  `half_pixel` for aligned=True, `output_half_pixel` for the original RoIAlign).
- `densenets::deform_conv2d` -> standard ops: while exporting, `deform_conv2d` is traced
  through `deform_conv2d_grid_sample` (bilinear sampling with `GridSample`, then one
  batched `MatMul`), so the file runs in stock ONNX Runtime without a custom-op library.
- `densenets::ms_deform_attn` -> one `GridSample` per level and a weighted `ReduceSum`
  (`_ms_deform_attn_symbolic`), level sizes read from `spatial_shapes` at run time.
- `torchvision::nms` -> `NonMaxSuppression` (torchvision registers that one itself).

`torch.export` keeps `densenets.roi_align` / `densenets.deform_conv2d` /
`densenets.ms_deform_attn` as custom ops
(their fake kernels give the output shapes); nothing here is used for it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.onnx import symbolic_helper as sh

__all__ = ["MIN_OPSET", "deform_conv2d_grid_sample", "onnx_export_mode", "register_onnx_symbolics"]

MIN_OPSET = 16  # GridSample and RoiAlign's coordinate_transformation_mode
_registered = False


def deform_conv2d_grid_sample(
    input: Tensor,
    offset: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    dilation: int | tuple[int, int] = 1,
    mask: Tensor | None = None,
) -> Tensor:
    """`densenets.ops.deform_conv2d` in ops every ONNX runtime has (GridSample, MatMul).

    Sampling matches the op (ops/reference.py): the k-th kernel point of output pixel
    (oy, ox) reads pixel (oy*s - p + i*d + dy, ox*s - p + j*d + dx) bilinearly, zero
    outside; `grid_sample(align_corners=True, padding_mode="zeros")` computes exactly
    that once pixel coordinates are mapped to [-1, 1] by 2 * x / (W - 1) - 1.

    Args:
        input (Tensor[N, C_in, H, W]), offset (Tensor[N, 2*D*K, H_out, W_out]),
        weight (Tensor[C_out, C_in/G, kh, kw]), bias (Tensor[C_out] | None),
        mask (Tensor[N, D*K, H_out, W_out] | None): as for `deform_conv2d`.

    Returns:
        Tensor[N, C_out, H_out, W_out]
    """
    stride, padding, dilation = (v if isinstance(v, tuple) else (v, v) for v in (stride, padding, dilation))
    n, c_in, h, w = input.shape
    c_out, c_group, kh, kw = weight.shape
    groups, k = c_in // c_group, kh * kw
    h_out, w_out = offset.shape[-2:]
    d = offset.shape[1] // (2 * k)
    dev, dt = input.device, input.dtype
    base_y = torch.arange(h_out, device=dev, dtype=dt) * stride[0] - padding[0]
    base_x = torch.arange(w_out, device=dev, dtype=dt) * stride[1] - padding[1]
    ki = torch.arange(kh, device=dev, dtype=dt).repeat_interleave(kw) * dilation[0]
    kj = torch.arange(kw, device=dev, dtype=dt).repeat(kh) * dilation[1]
    off = offset.reshape(n * d, k, 2, h_out, w_out)
    y = ki[:, None, None] + base_y[None, :, None] + off[:, :, 0]  # (N*D, K, H_out, W_out)
    x = kj[:, None, None] + base_x[None, None, :] + off[:, :, 1]
    # Pixel -> [-1, 1] (align_corners=True); a 1-pixel side maps its only pixel to -1.
    gy = 2 * y / (h - 1 if h > 1 else 1) - 1
    gx = 2 * x / (w - 1 if w > 1 else 1) - 1
    grid = torch.stack((gx, gy), dim=-1).reshape(n * d, k * h_out, w_out, 2)
    cols = F.grid_sample(
        input.reshape(n * d, c_in // d, h, w), grid, mode="bilinear", padding_mode="zeros", align_corners=True
    )  # (N*D, C_in/D, K*H_out, W_out)
    cols = cols.reshape(n, d, c_in // d, k, h_out * w_out)
    if mask is not None:
        cols = cols * mask.reshape(n, d, 1, k, h_out * w_out)
    cols = cols.reshape(n, groups, c_group * k, h_out * w_out)  # rows ordered (channel, kernel point)
    out = torch.matmul(weight.reshape(groups, c_out // groups, c_group * k), cols)  # (N, G, C_out/G, P)
    out = out.reshape(n, c_out, h_out, w_out)
    return out if bias is None else out + bias.reshape(1, c_out, 1, 1)


@sh.parse_args("v", "v", "f", "i", "i", "i", "b")
def _roi_align_symbolic(g, input, rois, spatial_scale, pooled_h, pooled_w, sampling_ratio, aligned):
    """densenets::roi_align(input, rois[K, 5], ...) -> ONNX RoiAlign (opset 16)."""
    batch = g.op(
        "Squeeze",
        g.op("Slice", rois, *_consts(g, [0], [1], [1])),
        g.op("Constant", value_t=torch.tensor([1])),
    )
    batch = g.op("Cast", batch, to_i=7)  # int64 batch indices
    boxes = g.op("Slice", rois, *_consts(g, [1], [5], [1]))
    return g.op(
        "RoiAlign",
        input,
        boxes,
        batch,
        spatial_scale_f=spatial_scale,
        output_height_i=pooled_h,
        output_width_i=pooled_w,
        sampling_ratio_i=max(sampling_ratio, 0),
        mode_s="avg",
        coordinate_transformation_mode_s="half_pixel" if aligned else "output_half_pixel",
    )


def _consts(g, starts: list[int], ends: list[int], axes: list[int]) -> list:
    return [g.op("Constant", value_t=torch.tensor(v, dtype=torch.int64)) for v in (starts, ends, axes)]


def _ms_deform_attn_symbolic(g, value, spatial_shapes, level_start_index, locations, weights):
    """densenets::ms_deform_attn -> one ONNX `GridSample` per level (bilinear, zeros,
    align_corners=0, as `ms_deform_attn_reference`), then the weighted sum. Level sizes and
    starts are read from `spatial_shapes` / `level_start_index` at run time (Gather), so
    the graph follows the image size; only the number of levels L must be static.

    value (N, S, M, C), spatial_shapes (L, 2), level_start_index (L),
    locations (N, Q, M, L, P, 2), weights (N, Q, M, L, P) -> (N, Q, M * C).
    """
    num_levels = sh._get_tensor_sizes(spatial_shapes)[0]
    if num_levels is None:
        num_levels = sh._get_tensor_sizes(locations)[3]
    if num_levels is None:
        raise RuntimeError("ms_deform_attn ONNX export: the number of levels must be static")

    def const(v):
        return g.op("Constant", value_t=torch.tensor(v, dtype=torch.int64))

    def item(t, *idx):  # t[idx] as a 1-element int64 tensor
        for i in idx[:-1]:
            t = g.op("Gather", t, const(i), axis_i=0)
        return g.op("Gather", t, const([idx[-1]]), axis_i=0)

    def shape_from(t, start, end):
        return g.op("Slice", g.op("Shape", t), const([start]), const([end]), const([0]))

    sizes = g.op("Shape", value)  # [N, S, M, C], read at run time
    n, c = item(sizes, 0), item(sizes, 3)
    nm, mc = g.op("Mul", n, item(sizes, 2)), g.op("Mul", item(sizes, 2), c)
    v = g.op("Transpose", value, perm_i=[0, 2, 3, 1])  # (N, M, C, S)
    v = g.op("Reshape", v, g.op("Concat", nm, c, item(sizes, 1), axis_i=0))  # (N*M, C, S)
    grid = g.op(
        "Sub",
        g.op("Mul", locations, g.op("Constant", value_t=torch.tensor(2.0))),
        g.op("Constant", value_t=torch.tensor(1.0)),
    )
    grid = g.op("Transpose", grid, perm_i=[0, 2, 1, 3, 4, 5])  # (N, M, Q, L, P, 2)
    grid = g.op(
        "Reshape", grid, g.op("Concat", const([-1]), shape_from(grid, 2, 6), axis_i=0)
    )  # (N*M, Q, L, P, 2)
    mode = "linear" if g.opset >= 20 else "bilinear"  # GridSample renamed the mode in opset 20
    samples = []
    for lvl in range(num_levels):
        h, w = item(spatial_shapes, lvl, 0), item(spatial_shapes, lvl, 1)
        start = item(level_start_index, lvl)
        level = g.op("Slice", v, start, g.op("Add", start, g.op("Mul", h, w)), const([2]))  # (N*M, C, h*w)
        level = g.op("Reshape", level, g.op("Concat", nm, c, h, w, axis_i=0))  # (N*M, C, h, w)
        sampled = g.op(
            "GridSample",
            level,
            g.op("Gather", grid, const(lvl), axis_i=2),  # (N*M, Q, P, 2)
            mode_s=mode,
            padding_mode_s="zeros",
            align_corners_i=0,
        )  # (N*M, C, Q, P)
        samples.append(g.op("Unsqueeze", sampled, const([3])))
    sampled = g.op("Concat", *samples, axis_i=3)  # (N*M, C, Q, L, P)
    wt = g.op("Transpose", weights, perm_i=[0, 2, 1, 3, 4])  # (N, M, Q, L, P)
    wt = g.op(
        "Reshape", wt, g.op("Concat", const([-1, 1]), shape_from(wt, 2, 5), axis_i=0)
    )  # (N*M, 1, Q, L, P)
    out = g.op("ReduceSum", g.op("Mul", sampled, wt), const([3, 4]), keepdims_i=0)  # (N*M, C, Q)
    out = g.op("Reshape", out, g.op("Concat", n, mc, const([-1]), axis_i=0))
    return g.op("Transpose", out, perm_i=[0, 2, 1])  # (N, Q, M*C)


def register_onnx_symbolics() -> None:
    """Register the ONNX translations of our ops (idempotent)."""
    global _registered
    if _registered:
        return
    import torchvision.ops  # noqa: F401 - registers torchvision::nms -> NonMaxSuppression

    torch.onnx.register_custom_op_symbolic("densenets::roi_align", _roi_align_symbolic, MIN_OPSET)
    torch.onnx.register_custom_op_symbolic("densenets::ms_deform_attn", _ms_deform_attn_symbolic, MIN_OPSET)
    _registered = True


@contextlib.contextmanager
def onnx_export_mode() -> Iterator[None]:
    """While exporting to ONNX, deformable convolutions trace through GridSample + MatMul.

    RoIAlign needs nothing: on the CPU it is our op, else torchvision's; both have a
    RoiAlign translation.
    """
    from densenets.ops import modules

    register_onnx_symbolics()
    saved = modules.deform_conv2d
    modules.deform_conv2d = deform_conv2d_grid_sample
    try:
        yield
    finally:
        modules.deform_conv2d = saved
