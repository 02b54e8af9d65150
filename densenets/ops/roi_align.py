"""`roi_align`: RoIAlign (He et al., 2017) with torchvision's signature and results.

On CPU, tensors go to our kernels (`torch.ops.densenets.roi_align`,
parallel over channels with a bilinear table shared by all channels; several times
faster than torchvision's single-threaded CPU kernels, mostly in the backward pass).
float16/bfloat16 are pooled in float32 and cast back. Other devices (CUDA), or a
missing compiled extension, call `torchvision.ops.roi_align`, which computes the same.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import roi_align as tv_roi_align

from .deform_conv import extension_available

__all__ = ["roi_align"]

_OP = "densenets::roi_align"
_BACKWARD_OP = "densenets::roi_align_backward"


_HAVE_OP = extension_available() and hasattr(torch.ops.densenets, "roi_align")


def _use_ours(input: Tensor) -> bool:
    return _HAVE_OP and input.device.type == "cpu" and input.is_floating_point()


def roi_align(
    input: Tensor,
    rois: Tensor,
    output_size: int | tuple[int, int],
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
    aligned: bool = False,
) -> Tensor:
    """Pool each RoI of `rois` to a fixed grid by bilinear sampling.

    Args:
        input (Tensor[N, C, H, W]): features.
        rois (Tensor[K, 5]): (batch index, x1, y1, x2, y2), in the coordinates that
            `spatial_scale` maps onto `input` (e.g. image pixels with scale 1/stride).
        output_size: (height, width) of the pooled grid, or one int for both.
        spatial_scale: input pixels per RoI coordinate unit.
        sampling_ratio: sample points per bin side; <= 0 picks ceil(bin size) per RoI.
        aligned: shift by half a pixel so that pixel centres line up (detectron2's
            ROIAlignV2); False is the original RoIAlign.

    Returns:
        Tensor[K, C, output_height, output_width]
    """
    oh, ow = (output_size, output_size) if isinstance(output_size, int) else output_size
    if not _use_ours(input):
        return tv_roi_align(input, rois.to(input.dtype), (oh, ow), spatial_scale, sampling_ratio, aligned)
    if rois.dim() != 2 or rois.shape[1] != 5:
        raise ValueError(f"roi_align: rois must be a (K, 5) tensor, got shape {tuple(rois.shape)}")
    # float16/bfloat16 (e.g. under autocast) are pooled in float32 and cast back, as
    # torchvision's autocast rule does.
    dtype = input.dtype if input.dtype in (torch.float32, torch.float64) else torch.float32
    out = torch.ops.densenets.roi_align(
        input.to(dtype), rois.to(dtype), float(spatial_scale), oh, ow, sampling_ratio, aligned
    )
    return out.to(input.dtype)


def _register() -> None:
    @torch.library.register_fake(_OP)
    def _(input, rois, spatial_scale, pooled_h, pooled_w, sampling_ratio, aligned):
        return input.new_empty((rois.shape[0], input.shape[1], pooled_h, pooled_w))

    @torch.library.register_fake(_BACKWARD_OP)
    def _(grad, rois, spatial_scale, pooled_h, pooled_w, batch, channels, height, width, sampling_ratio, aligned,
          channels_last):
        fmt = torch.channels_last if channels_last and channels > 1 else torch.contiguous_format
        return grad.new_empty((batch, channels, height, width)).contiguous(memory_format=fmt)

    def setup_context(ctx, inputs, output):
        input, rois, *params = inputs
        ctx.save_for_backward(rois)
        ctx.params = params
        ctx.input_shape = tuple(input.shape)
        ctx.channels_last = input.shape[1] > 1 and input.is_contiguous(memory_format=torch.channels_last)

    def backward(ctx, grad):
        (rois,) = ctx.saved_tensors
        spatial_scale, pooled_h, pooled_w, sampling_ratio, aligned = ctx.params
        grad_input = torch.ops.densenets.roi_align_backward(
            grad, rois, spatial_scale, pooled_h, pooled_w, *ctx.input_shape, sampling_ratio, aligned, ctx.channels_last
        )
        return (grad_input, None) + (None,) * len(ctx.params)

    torch.library.register_autograd(_OP, backward, setup_context=setup_context)


if _HAVE_OP:
    _register()
