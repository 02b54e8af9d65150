"""Custom operators: deformable convolution (DCNv1, modulated DCNv2) and RoIAlign."""

import densenets._torchvision_check  # noqa: F401  (first: one clear line when torch and torchvision do not match)

from .deform_conv import deform_conv2d, extension_available
from .modules import DeformConv2d, DeformConv2dWithOffset, ModulatedDeformConv2d
from .reference import deform_conv2d_reference
from .roi_align import roi_align

__all__ = [
    "deform_conv2d",
    "deform_conv2d_reference",
    "extension_available",
    "roi_align",
    "DeformConv2d",
    "DeformConv2dWithOffset",
    "ModulatedDeformConv2d",
]
