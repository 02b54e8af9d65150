"""What every segmentation head shares: conv blocks, dropout + 1x1 classifier, the loss.

Shapes: N images, K classes, C channels; a head's logits are at its input feature's
stride (8 for a D8 backbone) and the meta-architecture resizes them.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from densenets.config import instantiate
from densenets.layers import ConvNormAct, ShapeSpec

from .losses import SemSegLoss

__all__ = ["conv_bn_relu", "SeparableConvNormAct", "DecodeHead", "feature_shape"]


def conv_bn_relu(
    in_channels: int,
    out_channels: int,
    kernel_size: int = 1,
    dilation: int = 1,
    groups: int = 1,
    norm: str | dict | None = "BN",
) -> ConvNormAct:
    """A "same"-padded `ConvNormAct` with ReLU (the conv has a bias only without a norm)."""
    return ConvNormAct(
        in_channels,
        out_channels,
        kernel_size,
        dilation=dilation,
        groups=groups,
        norm=norm or "",
        activation="relu",
    )


class SeparableConvNormAct(nn.Sequential):
    """Depthwise (dilated) KxK conv-norm-ReLU, then pointwise 1x1 conv-norm-ReLU
    ("atrous separable convolution" of DeepLabV3+, Chen et al., 2018)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        dilation: int = 1,
        norm: str | dict | None = "BN",
    ) -> None:
        super().__init__()
        self.depthwise = conv_bn_relu(in_channels, in_channels, kernel_size, dilation, in_channels, norm)
        self.pointwise = conv_bn_relu(in_channels, out_channels, 1, norm=norm)


def feature_shape(input_shape: Mapping[str, ShapeSpec], name: str, key: str) -> ShapeSpec:
    """The ShapeSpec of feature `name`, or a ValueError naming the config key."""
    if name not in input_shape:
        raise ValueError(f"{key}: backbone has no feature {name!r} (it gives {', '.join(input_shape)})")
    return input_shape[name]


class DecodeHead(nn.Module):
    """Base class: `layers(features)` -> dropout -> 1x1 `classifier` -> logits.

    Subclasses build their layers and implement `layers()`; `forward` and `losses`
    are shared.

    Args:
        channels: output channels of `layers()`.
        num_classes: K.
        dropout: dropout probability before the classifier (0 disables it).
        loss: a `SemSegLoss`, or a dict of its arguments (default: plain cross-entropy).
        align_corners: of the bilinear resize of logits to the label size in `losses`.
    """

    def __init__(
        self,
        channels: int,
        num_classes: int,
        dropout: float = 0.1,
        loss: SemSegLoss | Mapping | None = None,
        align_corners: bool = False,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.align_corners = align_corners
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.classifier = nn.Conv2d(channels, num_classes, 1)
        self.loss = loss if isinstance(loss, SemSegLoss) else instantiate(SemSegLoss, loss, "loss")

    def layers(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """Features before the classifier, Tensor[N, channels, h, w]."""
        raise NotImplementedError

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """
        Args:
            features: backbone outputs by name (`res2` ... `res5`), each Tensor[N, C, h, w].

        Returns:
            Tensor[N, K, h, w]: logits at the stride of the head's input feature.
        """
        return self.classifier(self.dropout(self.layers(features)))

    def losses(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """
        Args:
            logits (Tensor[N, K, h, w]): this head's output.
            targets (Tensor[N, H, W]): int64 labels of the padded batch, 255 = ignore.

        Returns:
            Scalar loss, already multiplied by the loss weight.
        """
        logits = F.interpolate(
            logits, size=targets.shape[-2:], mode="bilinear", align_corners=self.align_corners
        )
        return self.loss(logits, targets)
