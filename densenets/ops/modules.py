"""Deformable convolution layers.

`DeformConv2d` (DCNv1, Dai et al., "Deformable Convolutional Networks", ICCV 2017) and
`ModulatedDeformConv2d` (DCNv2, Zhu et al., "Deformable ConvNets v2: More Deformable,
Better Results", CVPR 2019) predict their own offsets (and sigmoid mask) with a
zero-initialised convolution `conv_offset`, so a freshly built layer is exactly a plain
convolution (DCNv2: scaled by the initial mask 0.5) and learns to deform.
`DeformConv2dWithOffset` takes offsets (and an optional mask) computed elsewhere.
The `conv_offset` name and output layout (offsets of all points, then masks) follow
the common DCNv2 checkpoints, so their weights load by name.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .deform_conv import deform_conv2d

__all__ = ["DeformConv2dWithOffset", "DeformConv2d", "ModulatedDeformConv2d"]


def _pair(value: int | tuple[int, int]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


class DeformConv2dWithOffset(nn.Module):
    """Deformable convolution whose offsets (and mask) are given to `forward`.

    Args:
        in_channels, out_channels (int): C_in and C_out.
        kernel_size, stride, padding, dilation (int | tuple[int, int]): as in `nn.Conv2d`.
        groups (int): weight groups G (C_in and C_out divisible by G).
        deform_groups (int): deformable groups D; each has its own offsets (C_in divisible by D).
        bias (bool): learn an output bias.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        deform_groups: int = 1,
        bias: bool = True,
    ):
        super().__init__()
        if in_channels % groups or out_channels % groups:
            raise ValueError(
                f"in_channels={in_channels} and out_channels={out_channels} "
                f"must be divisible by groups={groups}"
            )
        if in_channels % deform_groups:
            raise ValueError(f"in_channels={in_channels} must be divisible by deform_groups={deform_groups}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride = _pair(kernel_size), _pair(stride)
        self.padding, self.dilation = _pair(padding), _pair(dilation)
        self.groups, self.deform_groups = groups, deform_groups
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, *self.kernel_size))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """`nn.Conv2d`'s initialisation."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.weight[0].numel()
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
            nn.init.uniform_(self.bias, -bound, bound)

    @property
    def num_points(self) -> int:
        """D * K: the number of sampled points per output pixel (mask channels)."""
        return self.deform_groups * self.kernel_size[0] * self.kernel_size[1]

    def forward(self, x: Tensor, offset: Tensor, mask: Tensor | None = None) -> Tensor:
        """
        Args:
            x (Tensor[N, C_in, H, W]): input features.
            offset (Tensor[N, 2 * D * K, H_out, W_out]): (dy, dx) pairs, torchvision layout.
            mask (Tensor[N, D * K, H_out, W_out] | None): modulation (DCNv2), or None.

        Returns:
            Tensor[N, C_out, H_out, W_out]
        """
        return deform_conv2d(
            x, offset, self.weight, self.bias, self.stride, self.padding, self.dilation, mask
        )

    def extra_repr(self) -> str:
        s = (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}, dilation={self.dilation}"
        )
        if self.groups != 1:
            s += f", groups={self.groups}"
        s += f", deform_groups={self.deform_groups}"
        if self.bias is None:
            s += ", bias=False"
        return s


class DeformConv2d(DeformConv2dWithOffset):
    """DCNv1 layer: offsets predicted from the input by `conv_offset` (zero-initialised).

    Same arguments as `DeformConv2dWithOffset`. `conv_offset` has the layer's kernel size,
    stride, padding and dilation, so its output grid is the layer's output grid.
    """

    _mask = False

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        deform_groups: int = 1,
        bias: bool = True,
    ):
        super().__init__(
            in_channels, out_channels, kernel_size, stride, padding, dilation, groups, deform_groups, bias
        )
        per_point = 3 if self._mask else 2
        self.conv_offset = nn.Conv2d(
            in_channels,
            per_point * self.num_points,
            self.kernel_size,
            self.stride,
            self.padding,
            self.dilation,
            bias=True,
        )
        nn.init.zeros_(self.conv_offset.weight)
        nn.init.zeros_(self.conv_offset.bias)

    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        """
        Args:
            x (Tensor[N, C_in, H, W]): input features.

        Returns:
            Tensor[N, C_out, H_out, W_out]
        """
        return super().forward(x, self.conv_offset(x))


class ModulatedDeformConv2d(DeformConv2d):
    """DCNv2 layer: `conv_offset` predicts offsets and a sigmoid mask (initially 0.5).

    Same arguments as `DeformConv2dWithOffset`. `conv_offset` outputs 3 * D * K channels:
    the 2 * D * K offsets in torchvision's (dy, dx) layout, then the D * K mask logits.
    """

    _mask = True

    def forward(self, x: Tensor) -> Tensor:
        """
        Args:
            x (Tensor[N, C_in, H, W]): input features.

        Returns:
            Tensor[N, C_out, H_out, W_out]
        """
        out = self.conv_offset(x)
        offset, mask_logits = out.split([2 * self.num_points, self.num_points], dim=1)
        return DeformConv2dWithOffset.forward(self, x, offset, mask_logits.sigmoid())
