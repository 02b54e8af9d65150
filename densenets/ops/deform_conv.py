"""`deform_conv2d`: deformable convolution (DCNv1, modulated DCNv2) with torchvision's API.

The kernels live in the compiled extension `densenets._C` (C++ for CPU, CUDA for GPUs) and
are reached through the dispatcher as `torch.ops.densenets.deform_conv2d`. This file checks
arguments once, registers the autograd formula and the fake (shape-only) implementations
used by `torch.compile` and `torch.export`, and falls back to `reference.py` with one
warning when the extension was not built.

Shapes: N images, C_in/C_out channels, G weight groups, D deformable groups,
K = kh * kw kernel points.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from .reference import deform_conv2d_reference

__all__ = ["deform_conv2d", "extension_available"]

_OP = "densenets::deform_conv2d"
_BACKWARD_OP = "densenets::deform_conv2d_backward"


def _load_extension() -> str | None:
    """Import `densenets._C` (which registers the ops); return why it failed, or None."""
    try:
        from densenets import _C  # noqa: F401
    except ImportError as e:
        return f"{type(e).__name__}: {e}".splitlines()[0]
    return None


_LOAD_ERROR = _load_extension()
_warned = False


def extension_available() -> bool:
    """Whether the compiled kernels (`densenets._C`) are loaded."""
    return _LOAD_ERROR is None


def _pair(value: int | tuple[int, int], name: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) for v in pair):
        raise ValueError(f"deform_conv2d: {name} must be an int or a pair of ints, got {value!r}")
    return pair  # type: ignore[return-value]


def _check(
    input: Tensor,
    offset: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    mask: Tensor | None,
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
) -> None:
    """Raise a one-line error naming the argument whose shape, dtype or device is wrong."""
    for name, t, dim in (
        ("input", input, 4),
        ("offset", offset, 4),
        ("weight", weight, 4),
        ("mask", mask, 4),
        ("bias", bias, 1),
    ):
        if t is None:
            continue
        if t.dim() != dim:
            raise ValueError(f"deform_conv2d: {name} must be {dim}-D, got shape {tuple(t.shape)}")
        if t.device != input.device:
            raise ValueError(f"deform_conv2d: {name} is on {t.device} but input is on {input.device}")
        if t.dtype != input.dtype:
            raise TypeError(f"deform_conv2d: {name} has dtype {t.dtype} but input has {input.dtype}")
    if not input.is_floating_point():
        raise TypeError(f"deform_conv2d: input must be floating point, got {input.dtype}")
    if min(stride) < 1 or min(dilation) < 1 or min(padding) < 0:
        raise ValueError(
            f"deform_conv2d: need stride >= 1, dilation >= 1, padding >= 0; got "
            f"stride={stride}, padding={padding}, dilation={dilation}"
        )
    n, c_in, h, w = input.shape
    c_out, c_group, kh, kw = weight.shape
    if c_group == 0 or c_in % c_group or c_out % (c_in // c_group):
        raise ValueError(
            f"deform_conv2d: weight shape {tuple(weight.shape)} does not fit input channels "
            f"{c_in}: need C_in divisible by weight.shape[1] and C_out by the groups"
        )
    h_out = (h + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    w_out = (w + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    if h_out <= 0 or w_out <= 0:
        raise ValueError(f"deform_conv2d: input {h}x{w} is smaller than the dilated kernel {kh}x{kw}")
    k = kh * kw
    if offset.shape[1] == 0 or offset.shape[1] % (2 * k) or c_in % (offset.shape[1] // (2 * k)):
        raise ValueError(
            f"deform_conv2d: offset has {offset.shape[1]} channels; need 2 * D * {k} "
            f"(kernel {kh}x{kw}) with D deformable groups dividing C_in={c_in}"
        )
    expect = (n, offset.shape[1], h_out, w_out)
    if tuple(offset.shape) != expect:
        raise ValueError(
            f"deform_conv2d: offset shape {tuple(offset.shape)} should be {expect} "
            f"(batch, 2 * D * K, output height, output width)"
        )
    if mask is not None:
        expect = (n, offset.shape[1] // 2, h_out, w_out)
        if tuple(mask.shape) != expect:
            raise ValueError(
                f"deform_conv2d: mask shape {tuple(mask.shape)} should be {expect} "
                f"(batch, D * K, output height, output width) to match offset"
            )
    if bias is not None and bias.shape[0] != c_out:
        raise ValueError(f"deform_conv2d: bias has {bias.shape[0]} elements, need C_out={c_out}")


def deform_conv2d(
    input: Tensor,
    offset: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    dilation: int | tuple[int, int] = 1,
    mask: Tensor | None = None,
) -> Tensor:
    """Deformable convolution v1 (Dai et al., 2017) and, with `mask`, v2 (Zhu et al., 2019).

    Same signature, offset layout and results as `torchvision.ops.deform_conv2d`. Weight
    groups G = C_in / weight.shape[1] and deformable groups D = offset.shape[1] / (2 * K)
    are read from the shapes. Under autocast the tensors are cast to the autocast dtype
    (CUDA computes float16/bfloat16 with float32 accumulation; CPU computes in float32).

    Args:
        input (Tensor[N, C_in, H, W]): input features, float.
        offset (Tensor[N, 2 * D * K, H_out, W_out]): sampling offsets in pixels; channel
            2 * (d * K + k) is the row (y) shift and 2 * (d * K + k) + 1 the column (x)
            shift of kernel point k = i * kw + j of deformable group d.
        weight (Tensor[C_out, C_in / G, kh, kw]): convolution weights.
        bias (Tensor[C_out] | None): output bias.
        stride, padding, dilation (int | tuple[int, int]): as in `F.conv2d`.
        mask (Tensor[N, D * K, H_out, W_out] | None): modulation scalars, usually sigmoid
            outputs in [0, 1]; None for DCNv1.

    Returns:
        Tensor[N, C_out, H_out, W_out]: on CPU channels-last for a channels-last input
        (as `F.conv2d`), else contiguous.
    """
    stride, padding, dilation = (
        _pair(stride, "stride"),
        _pair(padding, "padding"),
        _pair(dilation, "dilation"),
    )
    device_type = input.device.type
    if torch.is_autocast_enabled(device_type):
        dtype = torch.get_autocast_dtype(device_type)
        cast = lambda t: None if t is None else t.to(dtype)  # noqa: E731
        input, offset, weight, bias, mask = map(cast, (input, offset, weight, bias, mask))
    _check(input, offset, weight, bias, mask, stride, padding, dilation)
    if _LOAD_ERROR is not None:
        _warn_fallback()
        return deform_conv2d_reference(input, offset, weight, bias, stride, padding, dilation, mask)
    return torch.ops.densenets.deform_conv2d(input, offset, weight, mask, bias, *stride, *padding, *dilation)


def _warn_fallback() -> None:
    global _warned
    if not _warned:
        _warned = True
        warnings.warn(
            f"densenets._C is not available ({_LOAD_ERROR}); deform_conv2d uses the slow pure-PyTorch "
            "reference. Build the kernels with: pip install --no-build-isolation -e .",
            RuntimeWarning,
            stacklevel=3,
        )


def _channels_last_output(input: Tensor) -> bool:
    """Whether the kernel returns a channels-last output: on CPU, for a channels-last input
    (channels-last contiguous and not also contiguous), as `F.conv2d` does; CUDA returns NCHW."""
    return (
        input.device.type == "cpu"
        and input.is_contiguous(memory_format=torch.channels_last)
        and not input.is_contiguous()
    )


def _empty_output(input: Tensor, offset: Tensor, weight: Tensor) -> Tensor:
    """An uninitialised tensor with the shape and memory format of the kernel's output."""
    shape = (input.shape[0], weight.shape[0], offset.shape[2], offset.shape[3])
    fmt = torch.channels_last if _channels_last_output(input) else torch.contiguous_format
    return torch.empty(shape, dtype=input.dtype, device=input.device, memory_format=fmt)


def _register() -> None:
    """Fake implementations and autograd for the ops that `densenets._C` defines."""

    @torch.library.register_fake(_OP)
    def _(input, offset, weight, mask, bias, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w):
        return _empty_output(input, offset, weight)

    @torch.library.register_fake(_BACKWARD_OP)
    def _(grad_output, input, offset, weight, mask, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w):
        grad_mask = torch.empty_like(mask) if mask is not None else input.new_empty(0)
        return (
            torch.empty_like(input),
            torch.empty_like(offset),
            torch.empty_like(weight),
            grad_mask,
            weight.new_empty(weight.shape[0]),
        )

    def setup_context(ctx, inputs, output):
        input, offset, weight, mask, bias, *params = inputs
        ctx.save_for_backward(input, offset, weight, mask)
        ctx.params = params
        ctx.has_mask, ctx.has_bias = mask is not None, bias is not None

    def backward(ctx, grad_output):
        input, offset, weight, mask = ctx.saved_tensors
        grads = torch.ops.densenets.deform_conv2d_backward(
            grad_output.contiguous(), input, offset, weight, mask, *ctx.params
        )
        grad_input, grad_offset, grad_weight, grad_mask, grad_bias = grads
        return (
            grad_input,
            grad_offset,
            grad_weight,
            grad_mask if ctx.has_mask else None,
            grad_bias if ctx.has_bias else None,
        ) + (None,) * len(ctx.params)

    torch.library.register_autograd(_OP, backward, setup_context=setup_context)


if _LOAD_ERROR is None:
    _register()
