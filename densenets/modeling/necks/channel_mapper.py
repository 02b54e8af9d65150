"""Multi-scale input projections of Deformable DETR (Zhu et al., ICLR 2021) and DINO (Zhang et al., 2022).

Every chosen backbone level goes through a 1x1 convolution (with bias) and a
GroupNorm(32) to `out_channels`, with no activation. Extra, coarser levels follow:
the first is a 3x3 stride-2 convolution + GroupNorm on the *raw* last backbone feature
(res5, not its projection), each further one a 3x3 stride-2 convolution on the previous
extra level. Deformable DETR uses res3-res5 + one extra level (strides 8-64), DINO
4-scale the same, DINO 5-scale res2-res5 + one extra (strides 4-64).

Outputs are named ``p{log2(stride)}``. State-dict keys: ``convs.{i}.conv.*``,
``convs.{i}.norm.*`` for the backbone levels, ``extra_convs.{j}.conv.*`` /
``extra_convs.{j}.norm.*`` for the extra levels (the official ``input_proj.{i}.0/1``
in that order).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

from densenets.config import NECKS
from densenets.layers import ShapeSpec
from densenets.modeling.backbones.base import Backbone, check_in_features

__all__ = ["ChannelMapper"]


def _conv_gn(
    in_channels: int, out_channels: int, kernel_size: int, stride: int, num_groups: int
) -> nn.Sequential:
    conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding=kernel_size // 2)
    nn.init.xavier_uniform_(conv.weight, gain=1)
    nn.init.zeros_(conv.bias)
    return nn.Sequential(OrderedDict(conv=conv, norm=nn.GroupNorm(num_groups, out_channels)))


@NECKS.register()
class ChannelMapper(Backbone):
    """Project backbone levels to a common width and add strided extra levels.

    Args:
        input_shape: the backbone's `output_shape()`.
        in_features: backbone outputs to project, finest first (strides must double).
        out_channels: channels D of every output level.
        num_extra_levels: coarser levels added by 3x3 stride-2 convolutions.
        num_groups: groups of the GroupNorms.
    """

    def __init__(
        self,
        input_shape: dict[str, ShapeSpec],
        in_features: Sequence[str] = ("res3", "res4", "res5"),
        out_channels: int = 256,
        num_extra_levels: int = 1,
        num_groups: int = 32,
    ) -> None:
        super().__init__()
        self.in_features = list(in_features)
        strides = check_in_features(input_shape, self.in_features)
        if num_extra_levels < 0:
            raise ValueError(f"num_extra_levels: must be >= 0, got {num_extra_levels}")
        self.convs = nn.ModuleList(
            _conv_gn(input_shape[f].channels, out_channels, 1, 1, num_groups) for f in self.in_features
        )
        in_ch = input_shape[self.in_features[-1]].channels
        self.extra_convs = nn.ModuleList()
        for _ in range(num_extra_levels):
            self.extra_convs.append(_conv_gn(in_ch, out_channels, 3, 2, num_groups))
            in_ch = out_channels
        strides += [strides[-1] * 2 ** (k + 1) for k in range(num_extra_levels)]
        self._out_shapes = {f"p{int(math.log2(s))}": ShapeSpec(out_channels, s) for s in strides}

    def output_shape(self) -> dict[str, ShapeSpec]:
        """``p{k}`` -> ShapeSpec(out_channels, 2**k), finest first."""
        return dict(self._out_shapes)

    def forward(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Backbone features (``in_features`` each Tensor[N, C_k, H_k, W_k]) -> dict ``p{k}`` ->
        Tensor[N, out_channels, H_k, W_k], finest first."""
        outs = [conv(features[f]) for f, conv in zip(self.in_features, self.convs)]
        x = features[self.in_features[-1]]
        for conv in self.extra_convs:
            x = conv(x)
            outs.append(x)
        return dict(zip(self._out_shapes, outs))
