"""`ms_deform_attn`: multi-scale deformable attention (Zhu et al., "Deformable DETR", ICLR 2021).

The kernels live in the compiled extension `densenets._C` (C++ for CPU, CUDA for GPUs) and
are reached through the dispatcher as `torch.ops.densenets.ms_deform_attn`. This file checks
arguments once, registers the autograd formula and the fake (shape-only) implementations
used by `torch.compile` and `torch.export`, and falls back to `reference.py` (the
`grid_sample` path) with one warning when the extension lacks the op.

Shapes: N images, S = sum(h_l * w_l) flattened pixels, M heads, C channels per head,
Q queries, L levels, P points per head and level.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from .deform_conv import _LOAD_ERROR
from .reference import ms_deform_attn_reference

__all__ = ["ms_deform_attn"]

_OP = "densenets::ms_deform_attn"
_BACKWARD_OP = "densenets::ms_deform_attn_backward"

_HAVE_OP = _LOAD_ERROR is None and hasattr(torch.ops.densenets, "ms_deform_attn")
_warned = False


def _check(
    value: Tensor,
    spatial_shapes: Tensor,
    level_start_index: Tensor,
    sampling_locations: Tensor,
    attention_weights: Tensor,
) -> None:
    """Raise a one-line error naming the argument whose shape, dtype or device is wrong."""
    if value.dim() != 4:
        raise ValueError(f"ms_deform_attn: value must be (N, S, heads, C), got shape {tuple(value.shape)}")
    if not value.is_floating_point():
        raise TypeError(f"ms_deform_attn: value must be floating point, got {value.dtype}")
    n, s, m, _ = value.shape
    for name, t in (("spatial_shapes", spatial_shapes), ("level_start_index", level_start_index)):
        if t.dtype != torch.int64:
            raise TypeError(f"ms_deform_attn: {name} must be int64, got {t.dtype}")
    if spatial_shapes.dim() != 2 or spatial_shapes.shape[1] != 2:
        raise ValueError(
            f"ms_deform_attn: spatial_shapes must be (L, 2), got shape {tuple(spatial_shapes.shape)}"
        )
    num_levels = spatial_shapes.shape[0]
    if tuple(level_start_index.shape) != (num_levels,):
        raise ValueError(
            f"ms_deform_attn: level_start_index shape {tuple(level_start_index.shape)} should be "
            f"({num_levels},), one entry per level of spatial_shapes"
        )
    loc = sampling_locations
    if (
        loc.dim() != 6
        or loc.shape[0] != n
        or loc.shape[2] != m
        or loc.shape[3] != num_levels
        or loc.shape[5] != 2
    ):
        raise ValueError(
            f"ms_deform_attn: sampling_locations shape {tuple(loc.shape)} should be "
            f"({n}, Q, {m}, {num_levels}, P, 2) (batch, queries, heads, levels, points, xy)"
        )
    if tuple(attention_weights.shape) != tuple(loc.shape[:5]):
        raise ValueError(
            f"ms_deform_attn: attention_weights shape {tuple(attention_weights.shape)} should be "
            f"{tuple(loc.shape[:5])} (sampling_locations without the xy axis)"
        )
    for name, t in (("sampling_locations", loc), ("attention_weights", attention_weights)):
        if t.dtype != value.dtype:
            raise TypeError(f"ms_deform_attn: {name} has dtype {t.dtype} but value has {value.dtype}")
        if t.device != value.device:
            raise ValueError(f"ms_deform_attn: {name} is on {t.device} but value is on {value.device}")
    # The sizes are data: check them where reading them costs no device sync.
    if spatial_shapes.device.type == "cpu" and not torch.compiler.is_compiling():
        if (spatial_shapes < 0).any():
            raise ValueError(f"ms_deform_attn: spatial_shapes has negative sizes: {spatial_shapes.tolist()}")
        total = int(spatial_shapes.prod(1).sum())
        if total != s:
            raise ValueError(
                f"ms_deform_attn: spatial_shapes {spatial_shapes.tolist()} cover {total} pixels but "
                f"value has S={s}"
            )


def ms_deform_attn(
    value: Tensor,
    spatial_shapes: Tensor,
    level_start_index: Tensor,
    sampling_locations: Tensor,
    attention_weights: Tensor,
) -> Tensor:
    """Multi-scale deformable attention with the official Deformable DETR semantics.

    Each head of each query samples P points on each level by bilinear interpolation with
    zero padding, as `F.grid_sample(align_corners=False)`: (x, y) in [0, 1] reads pixel
    (x * w - 0.5, y * h - 0.5) of a level of size h x w; locations outside [0, 1] are
    allowed (their neighbours outside the level read zero). The samples are summed with
    the attention weights (not normalised here; the module applies a softmax).

    The float tensors share one dtype: float32, float64, or bfloat16 (float16 too on
    CUDA); half precision is accumulated in float32. Under autocast the op runs in
    float32, as autocast runs `grid_sample`.

    Args:
        value (Tensor[N, S, M, C]): the levels flattened row-major and concatenated.
        spatial_shapes (Tensor[L, 2]): int64 (h, w) of each level.
        level_start_index (Tensor[L]): int64 start of each level in S.
        sampling_locations (Tensor[N, Q, M, L, P, 2]): (x, y), normalised per level.
        attention_weights (Tensor[N, Q, M, L, P]): weights of the samples.

    Returns:
        Tensor[N, Q, M * C]
    """
    device_type = value.device.type
    if torch.is_autocast_enabled(device_type) and value.is_floating_point():
        value, sampling_locations, attention_weights = (
            t.float() for t in (value, sampling_locations, attention_weights)
        )
    _check(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
    spatial_shapes = spatial_shapes.to(value.device)
    level_start_index = level_start_index.to(value.device)
    if not _HAVE_OP:
        _warn_fallback()
        return ms_deform_attn_reference(
            value, spatial_shapes, level_start_index, sampling_locations, attention_weights
        )
    return torch.ops.densenets.ms_deform_attn(
        value, spatial_shapes, level_start_index, sampling_locations, attention_weights
    )


def _warn_fallback() -> None:
    global _warned
    if not _warned:
        _warned = True
        why = _LOAD_ERROR or "it was built without ms_deform_attn"
        warnings.warn(
            f"densenets._C is not usable ({why}); ms_deform_attn uses the slow grid_sample reference. "
            "Rebuild the kernels with: pip install --no-build-isolation -e .",
            RuntimeWarning,
            stacklevel=3,
        )


def _register() -> None:
    """Fake implementations and autograd for the ops that `densenets._C` defines."""

    @torch.library.register_fake(_OP)
    def _(value, spatial_shapes, level_start_index, sampling_locations, attention_weights):
        n, q = sampling_locations.shape[:2]
        return value.new_empty((n, q, value.shape[2] * value.shape[3]))

    @torch.library.register_fake(_BACKWARD_OP)
    def _(grad_output, value, spatial_shapes, level_start_index, sampling_locations, attention_weights):
        return (
            torch.empty_like(value, memory_format=torch.contiguous_format),
            torch.empty_like(sampling_locations, memory_format=torch.contiguous_format),
            torch.empty_like(attention_weights, memory_format=torch.contiguous_format),
        )

    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs)

    def backward(ctx, grad_output):
        value, spatial_shapes, level_start_index, sampling_locations, attention_weights = ctx.saved_tensors
        grad_value, grad_loc, grad_weights = torch.ops.densenets.ms_deform_attn_backward(
            grad_output, value, spatial_shapes, level_start_index, sampling_locations, attention_weights
        )
        return grad_value, None, None, grad_loc, grad_weights

    torch.library.register_autograd(_OP, backward, setup_context=setup_context)


if _HAVE_OP:
    _register()
