"""ROIPooler: RoIAlign over a feature pyramid, each box pooled from the level its size picks."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from densenets.ops import roi_align

__all__ = ["ROIPooler", "assign_boxes_to_levels"]


def assign_boxes_to_levels(
    boxes: torch.Tensor,
    min_level: int,
    max_level: int,
    canonical_box_size: float,
    canonical_level: int,
    eps: float,
) -> torch.Tensor:
    """FPN's level rule (Lin et al., 2017, eq. 1): ``k = floor(k0 + log2(sqrt(area) / 224))``.

    Args:
        boxes (Tensor[R, 4]): xyxy absolute pixels.

    Returns:
        Tensor[R], int64: level index relative to `min_level`.
    """
    sizes = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).sqrt()
    levels = torch.floor(canonical_level + torch.log2(sizes / canonical_box_size) + eps)
    return levels.clamp(min=min_level, max=max_level).to(torch.int64) - min_level


class ROIPooler(nn.Module):
    """Multi-level RoIAlign (Mask R-CNN, He et al., 2017) with FPN level assignment.

    Args:
        output_size: side of the pooled grid (7 for the box head).
        strides: strides of the pooled levels (e.g. 4, 8, 16, 32 for p2..p5); powers of 2.
        sampling_ratio: sampling points per bin side; 0 = adaptive (ceil(bin size)).
        aligned: half-pixel-corrected RoIAlign (detectron2's ROIAlignV2); False is the
            original RoIAlign (torchvision's detection models).
        canonical_box_size: box side that maps to `canonical_level` (224, ImageNet size).
        canonical_level: level of a canonical box (4).
        eps: added to the level before flooring, so that boxes exactly at a level boundary
            go up (1e-6 as in torchvision).
    """

    def __init__(
        self,
        output_size: int = 7,
        strides: Sequence[int] = (4, 8, 16, 32),
        sampling_ratio: int = 0,
        aligned: bool = True,
        canonical_box_size: float = 224.0,
        canonical_level: int = 4,
        eps: float = 1e-6,
    ) -> None:
        super().__init__()
        levels = [math.log2(s) for s in strides]
        if any(lv != int(lv) for lv in levels) or any(b - a != 1 for a, b in zip(levels, levels[1:])):
            raise ValueError(f"ROIPooler: strides must be consecutive powers of 2, got {list(strides)}")
        self.output_size = (output_size, output_size)
        self.scales = [1.0 / s for s in strides]
        self.min_level, self.max_level = int(levels[0]), int(levels[-1])
        self.sampling_ratio = sampling_ratio
        self.aligned = aligned
        self.canonical_box_size = canonical_box_size
        self.canonical_level = canonical_level
        self.eps = eps

    def forward(self, features: list[torch.Tensor], boxes: list[torch.Tensor]) -> torch.Tensor:
        """Pool.

        Args:
            features: one Tensor[N, C, H_l, W_l] per level, finest first.
            boxes: per image, Tensor[R_i, 4] xyxy absolute pixels.

        Returns:
            Tensor[R, C, S, S]: R = sum R_i, in the order of `boxes`.
        """
        if len(features) != len(self.scales):
            raise ValueError(f"ROIPooler: got {len(features)} feature levels, expected {len(self.scales)}")
        all_boxes = torch.cat(boxes)
        batch_idx = torch.repeat_interleave(
            torch.arange(len(boxes), device=all_boxes.device, dtype=all_boxes.dtype),
            torch.tensor([len(b) for b in boxes], device=all_boxes.device),
        )
        rois = torch.cat((batch_idx[:, None], all_boxes), dim=1)  # (R, 5)
        pool = dict(output_size=self.output_size, sampling_ratio=self.sampling_ratio, aligned=self.aligned)
        if len(features) == 1:
            return roi_align(features[0], rois, spatial_scale=self.scales[0], **pool)
        levels = assign_boxes_to_levels(
            all_boxes, self.min_level, self.max_level, self.canonical_box_size, self.canonical_level, self.eps
        )
        out = features[0].new_zeros((len(rois), features[0].shape[1], *self.output_size))
        for level, (feature, scale) in enumerate(zip(features, self.scales)):
            idx = (levels == level).nonzero()[:, 0]
            if idx.numel():
                out[idx] = roi_align(feature, rois[idx], spatial_scale=scale, **pool).to(out.dtype)
        return out

    def extra_repr(self) -> str:
        return (
            f"output_size={self.output_size[0]}, scales={self.scales}, sampling_ratio={self.sampling_ratio}, "
            f"aligned={self.aligned}"
        )
