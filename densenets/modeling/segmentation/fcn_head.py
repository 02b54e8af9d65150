"""FCN head: a few 3x3 convs on one feature map, then a 1x1 classifier.

Fully Convolutional Networks for Semantic Segmentation (Long et al., CVPR 2015), as
used on dilated backbones: torchvision's `fcn_resnet50` (one conv to in/4 channels)
and the Cityscapes recipe (two convs plus a conv over [input, convs] concatenated).
It is also the usual auxiliary head on res4.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from densenets.config import HEADS
from densenets.layers import ShapeSpec

from .decode_head import DecodeHead, conv_bn_relu, feature_shape
from .losses import SemSegLoss

__all__ = ["FCNHead"]


@HEADS.register()
class FCNHead(DecodeHead):
    """FCN head (Long et al., 2015).

    Args:
        input_shape: the backbone's `output_shape()`.
        num_classes: K.
        in_feature: the feature map it reads (`res5`; `res4` as an auxiliary head).
        channels: width of the convs.
        num_convs: number of 3x3 ConvNormAct (0: the classifier reads the input;
            then `channels` must equal the input channels).
        concat_input: one more 3x3 conv over [input, convs(input)] concatenated.
        norm: norm of the convs (`BN`, `SyncBN`, ...).
        dropout: before the classifier.
        loss: `SemSegLoss` arguments (e.g. `{loss_weight: 0.4}` for an auxiliary head).
        align_corners: of the logits' resize in `losses`.
    """

    def __init__(
        self,
        input_shape: Mapping[str, ShapeSpec],
        num_classes: int,
        in_feature: str = "res5",
        channels: int = 512,
        num_convs: int = 2,
        concat_input: bool = True,
        norm: str | dict | None = "BN",
        dropout: float = 0.1,
        loss: SemSegLoss | Mapping | None = None,
        align_corners: bool = False,
    ) -> None:
        super().__init__(channels, num_classes, dropout, loss, align_corners)
        in_channels = feature_shape(input_shape, in_feature, "in_feature").channels
        if num_convs == 0 and (concat_input or channels != in_channels):
            raise ValueError(
                f"num_convs: 0 needs channels == input channels ({in_channels}) and concat_input: false"
            )
        self.in_feature = in_feature
        self.convs = nn.Sequential(
            *(conv_bn_relu(in_channels if i == 0 else channels, channels, 3, norm=norm) for i in range(num_convs))
        )
        self.conv_cat = conv_bn_relu(in_channels + channels, channels, 3, norm=norm) if concat_input else None

    def layers(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        x = features[self.in_feature]
        out = self.convs(x)
        if self.conv_cat is not None:
            out = self.conv_cat(torch.cat([x, out], dim=1))
        return out
