"""Feature Pyramid Network (Lin et al., "Feature Pyramid Networks for Object Detection", 2017).

Lateral 1x1 convs bring every input to `out_channels`; a top-down pass adds each
coarser level, nearest-upsampled to the finer level's size, and a 3x3 conv smooths each
sum. A top block adds coarser levels: a stride-2 subsample of P5 (P6 for Faster R-CNN's
RPN) or two stride-2 3x3 convs (P6, P7 for RetinaNet, Lin et al., "Focal Loss for Dense
Object Detection", 2017) on C5 or P5.

Outputs are named ``p{log2(stride)}``: ``p2``..``p6`` for inputs res2..res5, ``p3``..``p7``
for res3..res5 with "p6p7". The computation matches torchvision's
``FeaturePyramidNetwork`` with ``LastLevelMaxPool`` / ``LastLevelP6P7`` (whose weights
load through `densenets.checkpoint.convert.resnet.torchvision_fpn_to_densenets`).

State-dict keys: ``lateral{k}.conv.*``, ``output{k}.conv.*`` (``.norm.*`` with a norm),
``top_block.p6.*``, ``top_block.p7.*``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from densenets.config import NECKS
from densenets.layers import ConvNormAct, ShapeSpec
from densenets.modeling.backbones.base import Backbone, check_in_features

__all__ = ["FPN", "LastLevelMaxPool", "LastLevelP6P7"]


class LastLevelMaxPool(nn.Module):
    """P6 = P5 subsampled by 2 (``max_pool2d`` with kernel 1, stride 2)."""

    in_feature = "p5"
    num_levels = 1

    def forward(self, p: torch.Tensor) -> list[torch.Tensor]:
        return [F.max_pool2d(p, kernel_size=1, stride=2, padding=0)]


class LastLevelP6P7(nn.Module):
    """P6 = conv3x3/2(x), P7 = conv3x3/2(relu(P6)), where x is C5 or P5.

    Args:
        in_channels: channels of x.
        out_channels: channels of P6 and P7.
        in_feature: "p5" (the FPN's last output) or the backbone feature x is (e.g. "res5").
    """

    num_levels = 2

    def __init__(self, in_channels: int, out_channels: int, in_feature: str = "p5") -> None:
        super().__init__()
        self.in_feature = in_feature
        self.p6 = nn.Conv2d(in_channels, out_channels, 3, 2, 1)
        self.p7 = nn.Conv2d(out_channels, out_channels, 3, 2, 1)
        for conv in (self.p6, self.p7):
            nn.init.kaiming_uniform_(conv.weight, a=1)
            nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        p6 = self.p6(x)
        return [p6, self.p7(F.relu(p6))]


@NECKS.register()
class FPN(Backbone):
    """Feature Pyramid Network over a backbone's features.

    Args:
        input_shape: the backbone's `output_shape()`.
        in_features: backbone features to use, finest first (strides must double).
        out_channels: channels of every output level.
        norm: `get_norm` spec for the lateral and output convs ("" = none, convs get a bias).
        top_block: "maxpool" (one extra level from the last output), "p6p7" (two extra
            levels by strided convs) or None.
        top_block_in: input of "p6p7": "p5" (the last output) or "c5" (the last backbone feature).
    """

    def __init__(
        self,
        input_shape: dict[str, ShapeSpec],
        in_features: Sequence[str] = ("res2", "res3", "res4", "res5"),
        out_channels: int = 256,
        norm: str | dict = "",
        top_block: str | None = "maxpool",
        top_block_in: str = "p5",
    ) -> None:
        super().__init__()
        self.in_features = list(in_features)
        strides = check_in_features(input_shape, self.in_features)
        self.levels = [int(math.log2(s)) for s in strides]
        for f, level in zip(self.in_features, self.levels):
            in_ch = input_shape[f].channels
            self.add_module(f"lateral{level}", ConvNormAct(in_ch, out_channels, 1, norm=norm))
            self.add_module(f"output{level}", ConvNormAct(out_channels, out_channels, 3, norm=norm))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_uniform_(m.weight, a=1)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        self.top_block = _build_top_block(
            top_block, top_block_in, self.in_features[-1], input_shape, out_channels
        )
        extra = self.top_block.num_levels if self.top_block is not None else 0
        self._out_features = [
            f"p{k}" for k in self.levels + list(range(self.levels[-1] + 1, self.levels[-1] + 1 + extra))
        ]
        self._out_shapes = {f: ShapeSpec(out_channels, 2 ** int(f[1:])) for f in self._out_features}
        self.size_divisibility = strides[-1]

    def output_shape(self) -> dict[str, ShapeSpec]:
        """``p{k}`` -> ShapeSpec(out_channels, 2**k)."""
        return dict(self._out_shapes)

    def forward(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Build the pyramid.

        Args:
            features: backbone features, ``in_features`` each Tensor[N, C_k, H_k, W_k].

        Returns:
            dict ``p{k}`` -> Tensor[N, out_channels, H_k, W_k], finest level first.
        """
        xs = [features[f] for f in self.in_features]
        inner = getattr(self, f"lateral{self.levels[-1]}")(xs[-1])
        outs = [getattr(self, f"output{self.levels[-1]}")(inner)]
        for x, level in zip(xs[-2::-1], self.levels[-2::-1]):
            lateral = getattr(self, f"lateral{level}")(x)
            inner = lateral + F.interpolate(inner, size=lateral.shape[-2:], mode="nearest")
            outs.insert(0, getattr(self, f"output{level}")(inner))
        if self.top_block is not None:
            # "p5" stands for the last output level, anything else names a backbone feature.
            src = outs[-1] if self.top_block.in_feature == "p5" else features[self.top_block.in_feature]
            outs.extend(self.top_block(src))
        return dict(zip(self._out_features, outs))


def _build_top_block(
    kind: str | None, source: str, last: str, input_shape: dict[str, ShapeSpec], out_channels: int
) -> nn.Module | None:
    if kind is None or kind == "":
        return None
    if kind == "maxpool":
        return LastLevelMaxPool()
    if kind == "p6p7":
        if source == "p5":
            return LastLevelP6P7(out_channels, out_channels, "p5")
        if source == "c5":
            return LastLevelP6P7(input_shape[last].channels, out_channels, last)
        raise ValueError(f"top_block_in: must be 'p5' or 'c5', got {source!r}")
    raise ValueError(f"top_block: must be 'maxpool', 'p6p7' or None, got {kind!r}")
