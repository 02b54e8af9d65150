"""Deformable convolution and multi-scale deformable attention in plain PyTorch.

These are the readable specifications of the compiled ops, the fallbacks when the
extension `densenets._C` is missing, and the references the kernels are tested against.

`deform_conv2d_reference` is what `densenets.ops.deform_conv2d` computes, written with `gather` and one
`einsum` so that autograd derives every gradient. It is the fallback when the compiled
extension `densenets._C` is missing, and the reference the kernels are tested against.
It materialises the whole (N, C_in * K, H_out * W_out) sample tensor, so it is slow and
memory hungry; use the compiled op for training.

Shapes: N images, C_in/C_out channels, G weight groups, D deformable (offset) groups,
K = kh * kw kernel points, P = H_out * W_out output positions.

Sampling follows torchvision exactly: the k-th kernel point (row i, column j, k = i * kw + j)
of output pixel (oy, ox) reads the input at
    y = oy * stride_h - pad_h + i * dilation_h + offset[n, 2 * (d * K + k), oy, ox]
    x = ox * stride_w - pad_w + j * dilation_w + offset[n, 2 * (d * K + k) + 1, oy, ox]
by bilinear interpolation with zeros outside the image (a point with y <= -1, y >= H,
x <= -1 or x >= W reads zero), then multiplies by mask[n, d * K + k, oy, ox] when given.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["deform_conv2d_reference", "bilinear_sample", "ms_deform_attn_reference"]


def bilinear_sample(input: Tensor, y: Tensor, x: Tensor) -> Tensor:
    """Bilinear samples of `input` at real pixel coordinates, zero outside the image.

    Args:
        input (Tensor[N, D, C, H, W]): images, channels split into D sampling groups.
        y (Tensor[N, D, S]): row coordinates in pixels (0 = centre of the first row).
        x (Tensor[N, D, S]): column coordinates, same shape as `y`.

    Returns:
        Tensor[N, D, C, S]: the interpolated values.
    """
    n, d, c, h, w = input.shape
    flat = input.reshape(n, d, c, h * w)
    inside = (y > -1) & (y < h) & (x > -1) & (x < w)
    # Points outside read zero; replacing them keeps floor() and the indices finite.
    y = torch.where(inside, y, torch.zeros_like(y))
    x = torch.where(inside, x, torch.zeros_like(x))
    y0, x0 = y.detach().floor(), x.detach().floor()
    ly, lx = y - y0, x - x0  # fractional parts carry the gradient w.r.t. y and x
    y0, x0 = y0.long(), x0.long()
    out = input.new_zeros(n, d, c, y.shape[-1])
    for dy, wy in ((0, 1 - ly), (1, ly)):
        for dx, wx in ((0, 1 - lx), (1, lx)):
            yy, xx = y0 + dy, x0 + dx
            valid = inside & (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
            index = (yy.clamp(0, h - 1) * w + xx.clamp(0, w - 1)).unsqueeze(2).expand(n, d, c, -1)
            weight = torch.where(valid, wy * wx, torch.zeros_like(wy))
            out = out + weight.unsqueeze(2) * torch.gather(flat, 3, index)
    return out


def deform_conv2d_reference(
    input: Tensor,
    offset: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: tuple[int, int] = (1, 1),
    padding: tuple[int, int] = (0, 0),
    dilation: tuple[int, int] = (1, 1),
    mask: Tensor | None = None,
) -> Tensor:
    """Deformable convolution (DCNv1; modulated DCNv2 when `mask` is given), pure PyTorch.

    Arguments are those of `densenets.ops.deform_conv2d` with `stride`, `padding` and
    `dilation` already as pairs; shapes are assumed to have been checked.

    Args:
        input (Tensor[N, C_in, H, W]): input features.
        offset (Tensor[N, 2 * D * K, H_out, W_out]): (dy, dx) per group and kernel point.
        weight (Tensor[C_out, C_in / G, kh, kw]): convolution weights.
        bias (Tensor[C_out] | None): added to every output position.
        stride, padding, dilation: (h, w) pairs, as in `F.conv2d`.
        mask (Tensor[N, D * K, H_out, W_out] | None): modulation scalars (DCNv2).

    Returns:
        Tensor[N, C_out, H_out, W_out]
    """
    n, c_in, h, w = input.shape
    c_out, c_group, kh, kw = weight.shape
    groups, k = c_in // c_group, kh * kw
    h_out, w_out = offset.shape[-2:]
    d = offset.shape[1] // (2 * k)
    # Regular sampling grid of the kernel: (K, H_out, W_out) row and column positions.
    base_y = torch.arange(h_out, device=input.device) * stride[0] - padding[0]
    base_x = torch.arange(w_out, device=input.device) * stride[1] - padding[1]
    ki = torch.arange(kh, device=input.device).repeat_interleave(kw) * dilation[0]
    kj = torch.arange(kw, device=input.device).repeat(kh) * dilation[1]
    grid_y = (ki[:, None, None] + base_y[None, :, None]).to(input.dtype)
    grid_x = (kj[:, None, None] + base_x[None, None, :]).to(input.dtype)
    off = offset.reshape(n, d, k, 2, h_out, w_out)
    y = (grid_y + off[:, :, :, 0]).reshape(n, d, -1)  # (N, D, K * P)
    x = (grid_x + off[:, :, :, 1]).reshape(n, d, -1)
    cols = bilinear_sample(input.reshape(n, d, c_in // d, h, w), y, x)  # (N, D, C_in / D, K * P)
    cols = cols.reshape(n, d, c_in // d, k, h_out * w_out)
    if mask is not None:
        cols = cols * mask.reshape(n, d, 1, k, h_out * w_out)
    cols = cols.reshape(n, groups, c_group * k, h_out * w_out)  # rows ordered (channel, kernel point)
    out = torch.einsum("gor,ngrp->ngop", weight.reshape(groups, c_out // groups, c_group * k), cols)
    out = out.reshape(n, c_out, h_out, w_out)
    if bias is not None:
        out = out + bias.reshape(1, c_out, 1, 1)
    return out


def ms_deform_attn_reference(
    value: Tensor,
    spatial_shapes: Tensor,
    level_start_index: Tensor,
    sampling_locations: Tensor,
    attention_weights: Tensor,
) -> Tensor:
    """Multi-scale deformable attention (Zhu et al., "Deformable DETR", ICLR 2021), pure PyTorch.

    Every head of every query samples P points on each of the L feature levels by bilinear
    interpolation, `F.grid_sample(align_corners=False, padding_mode="zeros")`: location
    (x, y) in [0, 1] reads pixel (x * w - 0.5, y * h - 0.5) of a level of size h x w, and
    neighbours outside the level read zero. The samples are summed with the attention
    weights. This is the `grid_sample` path of mmcv and transformers.

    Shapes: N images, S = sum(h_l * w_l) flattened pixels, M heads, C channels per head,
    Q queries, L levels, P points.

    Args:
        value (Tensor[N, S, M, C]): the levels flattened row-major and concatenated.
        spatial_shapes (Tensor[L, 2]): int64 (h, w) of each level.
        level_start_index (Tensor[L]): int64 offset of each level in S (not needed here:
            the levels are contiguous in the order of `spatial_shapes`).
        sampling_locations (Tensor[N, Q, M, L, P, 2]): (x, y), normalised to [0, 1] per level.
        attention_weights (Tensor[N, Q, M, L, P]): weights of the samples.

    Returns:
        Tensor[N, Q, M * C]
    """
    del level_start_index
    n, s, m, c = value.shape
    q, num_levels, p = sampling_locations.shape[1], sampling_locations.shape[3], sampling_locations.shape[4]
    sizes = [(int(h), int(w)) for h, w in spatial_shapes.tolist()]
    levels = value.split([h * w for h, w in sizes], dim=1)
    grids = 2 * sampling_locations - 1  # grid_sample's [-1, 1] convention
    samples = []
    for lvl, (h, w) in enumerate(sizes):
        v = levels[lvl].permute(0, 2, 3, 1).reshape(n * m, c, h, w)  # (N * M, C, h, w)
        g = grids[:, :, :, lvl].transpose(1, 2).reshape(n * m, q, p, 2)  # (N * M, Q, P, 2)
        samples.append(F.grid_sample(v, g, mode="bilinear", padding_mode="zeros", align_corners=False))
    sampled = torch.stack(samples, dim=3)  # (N * M, C, Q, L, P)
    weights = attention_weights.transpose(1, 2).reshape(n * m, 1, q, num_levels, p)
    out = (sampled * weights).sum(dim=(3, 4))  # (N * M, C, Q)
    return out.reshape(n, m * c, q).transpose(1, 2).contiguous()
