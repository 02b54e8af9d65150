"""BoxCoder: boxes <-> regression deltas (dx, dy, dw, dh), as in R-CNN (Girshick et al., 2014)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

__all__ = ["BoxCoder"]

# Largest log-scale change a delta may ask for: a 16 px box may grow to at most 1000 px.
_DEFAULT_SCALE_CLAMP = math.log(1000.0 / 16)


@dataclass(frozen=True)
class BoxCoder:
    """Encodes a target box relative to a reference box and decodes it back.

    With reference centre (x, y), size (w, h) and weights (wx, wy, ww, wh), a target box
    (x', y', w', h') is ``(wx (x'-x)/w, wy (y'-y)/h, ww log(w'/w), wh log(h'/h))``.
    Widths are ``x2 - x1`` (no +1), as in torchvision and detectron2.

    Args:
        weights: (wx, wy, ww, wh); (1, 1, 1, 1) for the RPN, (10, 10, 5, 5) for the box head.
        scale_clamp: upper bound on decoded dw, dh (after dividing by the weights).
    """

    weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0)
    scale_clamp: float = _DEFAULT_SCALE_CLAMP

    def __post_init__(self) -> None:
        if len(self.weights) != 4:
            raise ValueError(f"BoxCoder: weights must have 4 values, got {list(self.weights)}")
        object.__setattr__(self, "weights", tuple(float(w) for w in self.weights))

    def encode(self, boxes: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Deltas that turn `boxes` into `targets`.

        Args:
            boxes (Tensor[R, 4]): reference boxes, xyxy absolute pixels.
            targets (Tensor[R, 4]): target boxes, xyxy absolute pixels.

        Returns:
            Tensor[R, 4]: (dx, dy, dw, dh), weighted.
        """
        wx, wy, ww, wh = self.weights
        widths = boxes[:, 2] - boxes[:, 0]
        heights = boxes[:, 3] - boxes[:, 1]
        ctr_x = boxes[:, 0] + 0.5 * widths
        ctr_y = boxes[:, 1] + 0.5 * heights
        t_widths = targets[:, 2] - targets[:, 0]
        t_heights = targets[:, 3] - targets[:, 1]
        t_ctr_x = targets[:, 0] + 0.5 * t_widths
        t_ctr_y = targets[:, 1] + 0.5 * t_heights
        dx = wx * (t_ctr_x - ctr_x) / widths
        dy = wy * (t_ctr_y - ctr_y) / heights
        dw = ww * torch.log(t_widths / widths)
        dh = wh * torch.log(t_heights / heights)
        return torch.stack((dx, dy, dw, dh), dim=1)

    def decode(self, deltas: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """Apply deltas to reference boxes.

        Args:
            deltas (Tensor[R, K*4]): K deltas per box (K = 1 or one per class).
            boxes (Tensor[R, 4]): reference boxes, xyxy absolute pixels.

        Returns:
            Tensor[R, K*4]: decoded boxes, xyxy absolute pixels.
        """
        boxes = boxes.to(deltas.dtype)
        wx, wy, ww, wh = self.weights
        widths = (boxes[:, 2] - boxes[:, 0])[:, None]
        heights = (boxes[:, 3] - boxes[:, 1])[:, None]
        ctr_x = boxes[:, 0, None] + 0.5 * widths
        ctr_y = boxes[:, 1, None] + 0.5 * heights
        dx = deltas[:, 0::4] / wx
        dy = deltas[:, 1::4] / wy
        dw = (deltas[:, 2::4] / ww).clamp(max=self.scale_clamp)
        dh = (deltas[:, 3::4] / wh).clamp(max=self.scale_clamp)
        pred_ctr_x = dx * widths + ctr_x
        pred_ctr_y = dy * heights + ctr_y
        half_w = 0.5 * (torch.exp(dw) * widths)
        half_h = 0.5 * (torch.exp(dh) * heights)
        out = torch.stack(
            (pred_ctr_x - half_w, pred_ctr_y - half_h, pred_ctr_x + half_w, pred_ctr_y + half_h), dim=2
        )
        return out.reshape(deltas.shape)  # (R, K*4)

    def __repr__(self) -> str:
        return f"BoxCoder(weights={self.weights}, scale_clamp={self.scale_clamp:.4f})"
