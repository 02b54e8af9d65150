"""Sub-pixel convolution upsampler (Shi et al., "Real-Time Single Image and Video
Super-Resolution Using an Efficient Sub-Pixel Convolutional Neural Network", CVPR 2016).

A conv predicts r*r times the channels at low resolution and `PixelShuffle(r)`
rearranges them into an r-times larger map; x4 is two x2 steps, as in EDSR.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from densenets.config import HEADS
from densenets.layers import ShapeSpec

__all__ = ["PixelShuffleUpsampler"]


def _factors(scale: int) -> list[int]:
    """Per-step shuffle factors: [2] * n for scale 2**n, [3] for 3."""
    if scale == 3:
        return [3]
    if scale >= 2 and scale & (scale - 1) == 0:
        return [2] * int(math.log2(scale))
    raise ValueError(f"PixelShuffleUpsampler: scale must be 3 or a power of two, got {scale}")


@HEADS.register()
class PixelShuffleUpsampler(nn.Module):
    """Features -> image: (conv3x3 to r*r*C, PixelShuffle(r)) per step, then conv3x3 to RGB.

    Args:
        input_shape: the body's output (channels C).
        scale: upscaling factor: 2, 3, 4 (or 8, ...).
        out_channels: image channels.
    """

    def __init__(self, input_shape: ShapeSpec, scale: int = 2, out_channels: int = 3) -> None:
        super().__init__()
        c = input_shape.channels
        self.scale = scale
        self.factors = _factors(scale)
        self.convs = nn.ModuleList(nn.Conv2d(c, r * r * c, 3, padding=1) for r in self.factors)
        self.shuffles = nn.ModuleList(nn.PixelShuffle(r) for r in self.factors)
        self.conv_out = nn.Conv2d(c, out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """
        Args:
            x (Tensor[N, C, H, W]): body features.

        Returns:
            Tensor[N, out_channels, scale * H, scale * W], still mean-subtracted.
        """
        for conv, shuffle in zip(self.convs, self.shuffles):
            x = shuffle(conv(x))  # (N, r*r*C, H, W) -> (N, C, rH, rW)
        return self.conv_out(x)
