"""The EDSR body: residual blocks without batch norm, residual scaling, a long skip.

Lim et al., "Enhanced Deep Residual Networks for Single Image Super-Resolution",
CVPRW 2017. EDSR uses 32 blocks of 256 channels with residual scaling 0.1;
EDSR-baseline 16 blocks of 64 channels without scaling.

Shapes: N images, C channels, H x W the low-resolution size (the body keeps it).
"""

from __future__ import annotations

import torch
from torch import nn

from densenets.config import BACKBONES
from densenets.layers import ShapeSpec

from .base import Backbone

__all__ = ["ResBlock", "EDSRBody"]


class ResBlock(nn.Module):
    """conv3x3 -> ReLU -> conv3x3, scaled by `res_scale` and added to the input.

    Batch norm is left out on purpose: it normalises away the range of the features,
    which super-resolution needs, and costs memory (Lim et al., Sec. 3.1).
    """

    def __init__(self, channels: int, res_scale: float = 1.0) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(torch.relu(self.conv1(x))) * self.res_scale


@BACKBONES.register()
class EDSRBody(Backbone):
    """`num_blocks` residual blocks, a closing conv and a long skip over all of them.

    Args:
        num_blocks: residual blocks (EDSR 32, EDSR-baseline 16).
        channels: feature channels, in and out (EDSR 256, EDSR-baseline 64).
        res_scale: residual scaling inside each block (EDSR 0.1, baseline 1.0);
            keeps training of wide models stable (Lim et al., Sec. 3.2).
    """

    def __init__(self, num_blocks: int = 16, channels: int = 64, res_scale: float = 1.0) -> None:
        super().__init__()
        if num_blocks < 0 or channels <= 0:
            raise ValueError(
                f"EDSRBody: num_blocks must be >= 0 and channels > 0, got {num_blocks}, {channels}"
            )
        self.blocks = nn.Sequential(*(ResBlock(channels, res_scale) for _ in range(num_blocks)))
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.channels = channels

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """
        Args:
            x (Tensor[N, C, H, W]): features of the head conv.

        Returns:
            {"body": Tensor[N, C, H, W]}: ``x + conv(blocks(x))``.
        """
        return {"body": x + self.conv(self.blocks(x))}

    def output_shape(self) -> dict[str, ShapeSpec]:
        return {"body": ShapeSpec(channels=self.channels, stride=1)}
