"""Custom operators: deformable convolution (DCNv1, modulated DCNv2)."""

from .deform_conv import deform_conv2d, extension_available
from .modules import DeformConv2d, DeformConv2dWithOffset, ModulatedDeformConv2d
from .reference import deform_conv2d_reference

__all__ = [
    "deform_conv2d",
    "deform_conv2d_reference",
    "extension_available",
    "DeformConv2d",
    "DeformConv2dWithOffset",
    "ModulatedDeformConv2d",
]
