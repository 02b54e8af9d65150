"""ShapeSpec: the channels and stride of one feature map, passed between modules."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ShapeSpec"]


@dataclass(frozen=True)
class ShapeSpec:
    """Shape of a feature map without the batch and spatial sizes.

    Attributes:
        channels: number of channels.
        stride: input pixels per feature pixel (e.g. 4 for res2, 32 for res5).
    """

    channels: int
    stride: int = 1
