"""Atrous spatial pyramid pooling and the DeepLabV3 / DeepLabV3+ heads.

DeepLabV3: Rethinking Atrous Convolution for Semantic Image Segmentation
(Chen et al., 2017). DeepLabV3+: Encoder-Decoder with Atrous Separable Convolution for
Semantic Image Segmentation (Chen et al., ECCV 2018).

Shapes: N images, K classes; x = res5 at stride 8 (or 16), low-level = res2 at stride 4.
Atrous rates are 12/24/36 at output stride 8 and 6/12/18 at output stride 16.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from densenets.config import HEADS, instantiate
from densenets.layers import ShapeSpec
from densenets.ops import Dropout

from .decode_head import DecodeHead, SeparableConvNormAct, conv_bn_relu, feature_shape
from .losses import SemSegLoss

__all__ = ["ASPP", "DeepLabV3Head", "DeepLabV3PlusHead"]


class ASPP(nn.Module):
    """Parallel branches on one feature map, concatenated: a 1x1 conv, one 3x3 conv per
    atrous rate, and image pooling (global average -> 1x1 conv -> broadcast back).

    Args:
        in_channels: channels of the input feature.
        channels: channels of every branch.
        rates: atrous rates of the 3x3 branches.
        separable: depthwise-separable 3x3 branches (DeepLabV3+).
        project: a 1x1 ConvNormAct (+ dropout) reduces the concatenation to `channels`;
            without it the output has `(len(rates) + 2) * channels` channels.
        dropout: after the projection.
        norm: norm of every conv.
        align_corners: of the image-pooling broadcast (a constant map either way).
        pool_first: put the image-pooling branch first in the concatenation
            (mmsegmentation's `ASPPHead`) instead of last (torchvision, the DeepLab papers);
            it matters only to the layer that reads the concatenation.

    Attributes:
        out_channels: channels of the output.
    """

    def __init__(
        self,
        in_channels: int,
        channels: int = 256,
        rates: Sequence[int] = (12, 24, 36),
        separable: bool = False,
        project: bool = True,
        dropout: float = 0.0,
        norm: str | dict | None = "BN",
        align_corners: bool = False,
        pool_first: bool = False,
    ) -> None:
        super().__init__()
        atrous = SeparableConvNormAct if separable else conv_bn_relu
        self.branches = nn.ModuleList(
            [conv_bn_relu(in_channels, channels, 1, norm=norm)]
            + [atrous(in_channels, channels, 3, dilation=r, norm=norm) for r in rates]
        )
        self.image_pool = conv_bn_relu(in_channels, channels, 1, norm=norm)
        self.align_corners = align_corners
        self.pool_first = pool_first
        concat = (len(rates) + 2) * channels
        self.project = conv_bn_relu(concat, channels, 1, norm=norm) if project else None
        self.dropout = Dropout(dropout) if project and dropout > 0 else nn.Identity()
        self.out_channels = channels if project else concat

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Tensor[N, C_in, h, w] -> Tensor[N, out_channels, h, w]."""
        outs = [branch(x) for branch in self.branches]
        pooled = self.image_pool(F.adaptive_avg_pool2d(x, 1))  # (N, channels, 1, 1)
        pooled = F.interpolate(pooled, size=x.shape[-2:], mode="bilinear", align_corners=self.align_corners)
        outs.insert(0 if self.pool_first else len(outs), pooled)
        out = torch.cat(outs, dim=1)
        if self.project is not None:
            out = self.dropout(self.project(out))
        return out


def _build_aspp(aspp: ASPP | Mapping | None, in_channels: int, norm, align_corners: bool) -> ASPP:
    if isinstance(aspp, ASPP):
        return aspp
    # The head's `norm` and `align_corners` are the defaults of its ASPP's.
    cfg = {"norm": norm, "align_corners": align_corners, **(aspp or {})}
    return instantiate(ASPP, cfg, "aspp", in_channels=in_channels)


@HEADS.register()
class DeepLabV3Head(DecodeHead):
    """DeepLabV3 head (Chen et al., 2017): ASPP -> 3x3 ConvNormAct -> classifier.

    With `aspp: {channels: 256, project: true, dropout: 0.5}`, `channels: 256` and
    `dropout: 0` it is torchvision's `DeepLabHead`; the Cityscapes recipe uses
    `aspp: {channels: 512, project: false}` and a 3x3 conv over the concatenation.

    Args:
        input_shape: the backbone's `output_shape()`.
        num_classes: K.
        aspp: an `ASPP` or a dict of its arguments (`in_channels` comes from the feature;
            `norm` and `align_corners` default to the head's).
        in_feature: the feature map ASPP reads.
        channels: width of the 3x3 conv after ASPP.
        norm: norm of the head's convs.
        dropout: before the classifier.
        loss: `SemSegLoss` arguments.
        align_corners: of bilinear resizes.
    """

    def __init__(
        self,
        input_shape: Mapping[str, ShapeSpec],
        num_classes: int,
        aspp: ASPP | Mapping | None = None,
        in_feature: str = "res5",
        channels: int = 512,
        norm: str | dict | None = "BN",
        dropout: float = 0.1,
        loss: SemSegLoss | Mapping | None = None,
        align_corners: bool = False,
    ) -> None:
        super().__init__(channels, num_classes, dropout, loss, align_corners)
        in_channels = feature_shape(input_shape, in_feature, "in_feature").channels
        self.in_feature = in_feature
        self.aspp = _build_aspp(aspp, in_channels, norm, align_corners)
        self.bottleneck = conv_bn_relu(self.aspp.out_channels, channels, 3, norm=norm)

    def layers(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.bottleneck(self.aspp(features[self.in_feature]))


@HEADS.register()
class DeepLabV3PlusHead(DeepLabV3Head):
    """DeepLabV3+ head (Chen et al., 2018): the DeepLabV3 head's features, upsampled to
    the low-level feature's stride, concatenated with a 48-channel projection of it and
    refined by two 3x3 convs.

    Args:
        input_shape, num_classes, aspp, in_feature, channels, norm, dropout, loss,
            align_corners: as in `DeepLabV3Head`.
        low_level_feature: the high-resolution feature the decoder fuses (`res2`).
        low_level_channels: width of its 1x1 projection.
        separable: depthwise-separable decoder convs.
    """

    def __init__(
        self,
        input_shape: Mapping[str, ShapeSpec],
        num_classes: int,
        aspp: ASPP | Mapping | None = None,
        in_feature: str = "res5",
        low_level_feature: str = "res2",
        low_level_channels: int = 48,
        channels: int = 512,
        separable: bool = True,
        norm: str | dict | None = "BN",
        dropout: float = 0.1,
        loss: SemSegLoss | Mapping | None = None,
        align_corners: bool = False,
    ) -> None:
        super().__init__(
            input_shape, num_classes, aspp, in_feature, channels, norm, dropout, loss, align_corners
        )
        low_in = feature_shape(input_shape, low_level_feature, "low_level_feature").channels
        self.low_level_feature = low_level_feature
        self.low_level = conv_bn_relu(low_in, low_level_channels, 1, norm=norm)
        conv = SeparableConvNormAct if separable else conv_bn_relu
        self.fuse = nn.Sequential(
            conv(channels + low_level_channels, channels, 3, norm=norm),
            conv(channels, channels, 3, norm=norm),
        )

    def layers(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        x = super().layers(features)
        low = self.low_level(features[self.low_level_feature])
        x = F.interpolate(x, size=low.shape[-2:], mode="bilinear", align_corners=self.align_corners)
        return self.fuse(torch.cat([x, low], dim=1))
