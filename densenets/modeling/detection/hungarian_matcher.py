"""Optimal one-to-one matching of set predictions to ground truth (DETR, Carion et al., 2020).

Shapes: B images, Q queries, K classes, T_b ground-truth objects in image b. Boxes are
normalised (cx, cy, w, h) in [0, 1], the DETR head's own convention.
"""

from __future__ import annotations

import torch
from scipy.optimize import linear_sum_assignment
from torch import nn
from torchvision.ops import box_convert, generalized_box_iou

__all__ = ["HungarianMatcher"]


class HungarianMatcher(nn.Module):
    """Assign each ground-truth object to one query by minimising a total matching cost.

    The cost of pairing query q with object t is
    ``cost_class * C_class + cost_bbox * |b_q - b_t|_1 - cost_giou * GIoU(b_q, b_t)``,
    where ``C_class`` is ``-p_q(c_t)`` for a softmax classifier (DETR) or the focal
    cost ``alpha (1-p)^gamma (-log p) - (1-alpha) p^gamma (-log(1-p))`` of the sigmoid
    probability for a sigmoid classifier (Deformable/DAB-DETR). The assignment is solved
    exactly with ``scipy.optimize.linear_sum_assignment``.

    Args:
        cost_class: weight of the classification cost.
        cost_bbox: weight of the L1 distance between normalised cxcywh boxes.
        cost_giou: weight of the (negated) generalised IoU.
        class_cost_type: "softmax" (logits include a trailing no-object column) or "focal".
        focal_alpha: alpha of the focal cost.
        focal_gamma: gamma of the focal cost.
    """

    def __init__(
        self,
        cost_class: float = 1.0,
        cost_bbox: float = 5.0,
        cost_giou: float = 2.0,
        class_cost_type: str = "softmax",
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
    ) -> None:
        super().__init__()
        if class_cost_type not in ("softmax", "focal"):
            raise ValueError(f"class_cost_type: expected 'softmax' or 'focal', got {class_cost_type!r}")
        if cost_class == 0 and cost_bbox == 0 and cost_giou == 0:
            raise ValueError("HungarianMatcher: all costs are 0")
        self.cost_class = cost_class
        self.cost_bbox = cost_bbox
        self.cost_giou = cost_giou
        self.class_cost_type = class_cost_type
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma

    def _class_cost(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """(N, K[+1]) logits, (T,) labels -> (N, T) classification cost."""
        if self.class_cost_type == "softmax":
            return -logits.softmax(-1)[:, labels]
        p = logits.sigmoid()[:, labels]
        a, g = self.focal_alpha, self.focal_gamma
        pos = a * (1 - p) ** g * -(p + 1e-8).log()
        neg = (1 - a) * p**g * -(1 - p + 1e-8).log()
        return pos - neg

    @torch.no_grad()
    def cost_matrix(
        self, logits: torch.Tensor, boxes: torch.Tensor, gt_labels: torch.Tensor, gt_boxes: torch.Tensor
    ) -> torch.Tensor:
        """The matching cost of every (query, object) pair.

        Args:
            logits (Tensor[N, K] or Tensor[N, K+1]): class logits of N predictions.
            boxes (Tensor[N, 4]): predicted boxes, normalised cxcywh.
            gt_labels (Tensor[T] int64): labels in 0..K-1.
            gt_boxes (Tensor[T, 4]): ground-truth boxes, normalised cxcywh.

        Returns:
            Tensor[N, T] float32.
        """
        logits, boxes, gt_boxes = logits.float(), boxes.float(), gt_boxes.float()
        cost = self.cost_class * self._class_cost(logits, gt_labels)
        cost = cost + self.cost_bbox * torch.cdist(boxes, gt_boxes, p=1)
        giou = generalized_box_iou(
            box_convert(boxes, "cxcywh", "xyxy"), box_convert(gt_boxes, "cxcywh", "xyxy")
        )
        return cost - self.cost_giou * giou

    @torch.no_grad()
    def forward(
        self, logits: torch.Tensor, boxes: torch.Tensor, targets: list[dict[str, torch.Tensor]]
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Match the predictions of each image to its objects.

        Args:
            logits (Tensor[B, Q, K(+1)]): class logits.
            boxes (Tensor[B, Q, 4]): predicted boxes, normalised cxcywh.
            targets: B dicts with ``labels`` (Tensor[T_b] int64) and ``boxes``
                (Tensor[T_b, 4], normalised cxcywh).

        Returns:
            B pairs ``(query_idx, target_idx)`` of int64 CPU tensors of length
            ``min(Q, T_b)``: query ``query_idx[i]`` is matched to object ``target_idx[i]``.
        """
        b, q = logits.shape[:2]
        sizes = [len(t["labels"]) for t in targets]
        if sum(sizes) == 0:
            empty = torch.empty(0, dtype=torch.int64)
            return [(empty, empty) for _ in range(b)]
        gt_labels = torch.cat([t["labels"] for t in targets])
        gt_boxes = torch.cat([t["boxes"] for t in targets])
        # One cost matrix for the whole batch, then a block per image.
        cost = self.cost_matrix(logits.flatten(0, 1), boxes.flatten(0, 1), gt_labels, gt_boxes)
        cost = cost.view(b, q, -1).cpu()
        if not torch.isfinite(cost).all():
            raise FloatingPointError(
                "HungarianMatcher: the cost matrix has NaN/inf entries (diverged predictions)"
            )
        out = []
        for i, block in enumerate(cost.split(sizes, dim=-1)):
            rows, cols = linear_sum_assignment(block[i].numpy())
            out.append((torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64)))
        return out

    def extra_repr(self) -> str:
        return (
            f"cost_class={self.cost_class}, cost_bbox={self.cost_bbox}, cost_giou={self.cost_giou}, "
            f"class_cost_type={self.class_cost_type!r}"
        )
