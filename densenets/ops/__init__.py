"""Custom operators: deformable convolution (DCNv1, modulated DCNv2), multi-scale deformable
attention (Deformable DETR), RoIAlign, and a one-pass CPU dropout."""

import densenets._torchvision_check  # noqa: F401  (first: one clear line when torch and torchvision do not match)

from .deform_conv import deform_conv2d, extension_available
from .dropout import Dropout, dropout
from .modules import (
    DeformConv2d,
    DeformConv2dWithOffset,
    ModulatedDeformConv2d,
    MultiScaleDeformableAttention,
)
from .ms_deform_attn import ms_deform_attn
from .reference import deform_conv2d_reference, ms_deform_attn_reference
from .roi_align import roi_align

__all__ = [
    "deform_conv2d",
    "deform_conv2d_reference",
    "dropout",
    "extension_available",
    "ms_deform_attn",
    "ms_deform_attn_reference",
    "roi_align",
    "DeformConv2d",
    "DeformConv2dWithOffset",
    "Dropout",
    "ModulatedDeformConv2d",
    "MultiScaleDeformableAttention",
]
