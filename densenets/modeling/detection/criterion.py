"""Set-prediction losses of DETR-style detectors.

Shapes: L decoder layers, B images, Q queries, K classes (foreground). Boxes are
normalised (cx, cy, w, h) in [0, 1]. DETR: Carion et al., "End-to-End Object Detection
with Transformers", 2020. Focal classification: Lin et al., 2017, as used by
Deformable DETR and DAB-DETR.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import box_convert, generalized_box_iou_loss, sigmoid_focal_loss

from ...config import instantiate, join_path, key_path
from ...utils.comm import all_reduce_sum, get_world_size
from .hungarian_matcher import HungarianMatcher

__all__ = ["SetCriterion"]


class SetCriterion(nn.Module):
    """Hungarian-matched classification, L1 and GIoU losses on every decoder layer.

    Each layer's predictions are matched to the ground truth on their own; the box
    losses are summed over matched pairs and divided by the number of ground-truth
    boxes averaged over processes (at least 1), so every process uses the same divisor.

    Args:
        num_classes: K, foreground classes.
        matcher: the assignment of queries to objects.
        class_weight: weight of the classification loss.
        bbox_weight: weight of the L1 loss.
        giou_weight: weight of the GIoU loss.
        class_loss_type: "softmax" -- cross-entropy over K+1 logits, the last one
            "no object", down-weighted by `no_object_weight` (DETR); or "focal" --
            sigmoid focal loss over K logits (DAB-DETR).
        no_object_weight: cross-entropy weight of the no-object class.
        focal_alpha: alpha of the focal loss.
        focal_gamma: gamma of the focal loss.
    """

    def __init__(
        self,
        num_classes: int,
        matcher: HungarianMatcher,
        class_weight: float = 1.0,
        bbox_weight: float = 5.0,
        giou_weight: float = 2.0,
        class_loss_type: str = "softmax",
        no_object_weight: float = 0.1,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
    ) -> None:
        super().__init__()
        if class_loss_type not in ("softmax", "focal"):
            raise ValueError(f"class_loss_type: expected 'softmax' or 'focal', got {class_loss_type!r}")
        self.num_classes = num_classes
        self.matcher = matcher
        self.class_weight = class_weight
        self.bbox_weight = bbox_weight
        self.giou_weight = giou_weight
        self.class_loss_type = class_loss_type
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma
        empty_weight = torch.ones(num_classes + 1)
        empty_weight[-1] = no_object_weight
        self.register_buffer("empty_weight", empty_weight, persistent=False)

    @classmethod
    def from_config(cls, cfg: Mapping, num_classes: int) -> SetCriterion:
        """``{matcher: {<HungarianMatcher options>}, <options>}``; `num_classes` is the model's."""
        path = key_path(cfg, "criterion")
        matcher = instantiate(HungarianMatcher, cfg.get("matcher"), join_path(path, "matcher"))
        return cls(num_classes, matcher, **{k: v for k, v in cfg.items() if k != "matcher"})

    def forward(
        self, logits: torch.Tensor, boxes: torch.Tensor, targets: list[dict[str, torch.Tensor]]
    ) -> dict[str, torch.Tensor]:
        """Losses of all decoder layers.

        Args:
            logits (Tensor[L, B, Q, K+1] or Tensor[L, B, Q, K]): class logits per layer.
            boxes (Tensor[L, B, Q, 4]): predicted boxes per layer, normalised cxcywh.
            targets: B dicts with ``labels`` (Tensor[T_b] int64 in 0..K-1) and ``boxes``
                (Tensor[T_b, 4] normalised cxcywh).

        Returns:
            ``loss_class``, ``loss_bbox``, ``loss_giou`` of the last layer and the same
            with suffix ``_<l>`` for each earlier layer l (auxiliary losses), weighted.
        """
        num_boxes = self.num_boxes(targets, logits.device)
        losses: dict[str, torch.Tensor] = {}
        last = logits.shape[0] - 1
        for layer in range(logits.shape[0]):
            indices = self.matcher(logits[layer], boxes[layer], targets)
            suffix = "" if layer == last else f"_{layer}"
            layer_losses = self.layer_losses(logits[layer], boxes[layer], targets, indices, num_boxes)
            losses.update({k + suffix: v for k, v in layer_losses.items()})
        return losses

    @staticmethod
    def num_boxes(targets: list[dict[str, torch.Tensor]], device: torch.device) -> float:
        """Ground-truth boxes per process, averaged over processes, at least 1."""
        n = torch.tensor(float(sum(len(t["labels"]) for t in targets)), device=device)
        return max(all_reduce_sum(n).item() / get_world_size(), 1.0)

    def layer_losses(
        self,
        logits: torch.Tensor,
        boxes: torch.Tensor,
        targets: list[dict[str, torch.Tensor]],
        indices: list[tuple[torch.Tensor, torch.Tensor]],
        num_boxes: float,
    ) -> dict[str, torch.Tensor]:
        """Weighted losses of one layer given its matching (see `HungarianMatcher.forward`)."""
        device = logits.device
        batch_idx = torch.cat([torch.full_like(q, i) for i, (q, _) in enumerate(indices)]).to(device)
        query_idx = torch.cat([q for q, _ in indices]).to(device)
        labels = torch.cat([t["labels"][j.to(device)] for t, (_, j) in zip(targets, indices)])
        gt_boxes = torch.cat([t["boxes"][j.to(device)] for t, (_, j) in zip(targets, indices)])

        if self.class_loss_type == "softmax":
            classes = torch.full(logits.shape[:2], self.num_classes, dtype=torch.int64, device=device)
            classes[batch_idx, query_idx] = labels
            # Mean weighted by class weight, as DETR (no-object queries count 0.1 each).
            loss_class = F.cross_entropy(logits.transpose(1, 2), classes, self.empty_weight)
        else:
            onehot = torch.zeros_like(logits)
            onehot[batch_idx, query_idx, labels] = 1.0
            loss_class = (
                sigmoid_focal_loss(
                    logits, onehot, alpha=self.focal_alpha, gamma=self.focal_gamma, reduction="sum"
                )
                / num_boxes
            )

        pred = boxes[batch_idx, query_idx]  # (M, 4)
        loss_bbox = F.l1_loss(pred, gt_boxes, reduction="sum") / num_boxes
        loss_giou = (
            generalized_box_iou_loss(
                box_convert(pred, "cxcywh", "xyxy"), box_convert(gt_boxes, "cxcywh", "xyxy"), reduction="sum"
            )
            / num_boxes
        )
        return {
            "loss_class": self.class_weight * loss_class,
            "loss_bbox": self.bbox_weight * loss_bbox,
            "loss_giou": self.giou_weight * loss_giou,
        }

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, class_loss_type={self.class_loss_type!r}, weights=("
            f"{self.class_weight}, {self.bbox_weight}, {self.giou_weight})"
        )
