"""DAB-DETR: Liu et al., "DAB-DETR: Dynamic Anchor Boxes are Better Queries for DETR", ICLR 2022.

DETR's pipeline (one backbone level, 1x1 projection) with Q learned 4-D anchor boxes as
queries, refined by every decoder layer (`DABTransformer`); sigmoid focal
classification and top-k inference over (query, class) pairs. Shapes: B images, Q
queries, K classes, L decoder layers, D width; anchors and boxes normalised cxcywh.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ...config import MODELS
from ...layers import ImageList
from ..backbones.base import Backbone
from .box_refinement import inverse_sigmoid, refine_boxes, topk_detections
from .criterion import SetCriterion
from .dab_transformer import DAB_DETR_EPS, DABTransformer
from .detr import SingleScaleDETR
from .detr_base import delta_box_head, focal_class_head

__all__ = ["DABDETR"]


@MODELS.register()
class DABDETR(SingleScaleDETR):
    """DAB-DETR (Liu et al., 2022) on the DETR pipeline.

    Args:
        backbone, criterion, num_classes, in_feature, **options: as `DETR` (the criterion
            uses the focal classification loss).
        transformer: a `DABTransformer`.
        num_queries: Q anchors (decoded once per pattern when the transformer has
            `num_patterns`).
        fixed_anchor_xy: draw anchor centres uniformly at random and keep them fixed
            (a buffer); only widths and heights are learned.
        num_select: detections kept per image at inference: the top scores over all
            (query, class) pairs.
    """

    def __init__(
        self,
        backbone: Backbone,
        transformer: DABTransformer,
        criterion: SetCriterion,
        num_classes: int,
        num_queries: int = 300,
        fixed_anchor_xy: bool = False,
        num_select: int = 300,
        in_feature: str = "res5",
        **options: Any,
    ) -> None:
        super().__init__(backbone, None, transformer, criterion, num_classes, num_queries, **options)
        self._init_input_proj(in_feature)
        self.num_select = num_select
        # Anchors live in inverse-sigmoid space, initialised like an nn.Embedding.
        self.anchor_wh = nn.Parameter(torch.randn(num_queries, 2))
        if fixed_anchor_xy:
            self.register_buffer("anchor_xy", inverse_sigmoid(torch.rand(num_queries, 2), DAB_DETR_EPS))
        else:
            self.anchor_xy = nn.Parameter(torch.randn(num_queries, 2))
        d = transformer.d_model
        self.class_embed = focal_class_head(d, num_classes)
        self.bbox_embed = delta_box_head(d)

    def anchors(self) -> torch.Tensor:
        """Tensor[Q, 4]: the learned initial anchors, cxcywh in (0, 1)."""
        return torch.cat([self.anchor_xy, self.anchor_wh], dim=-1).sigmoid()

    def predict(self, images: ImageList, targets: list | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Class logits (L, B, Q', K) and refined boxes (L, B, Q', 4) of every decoder layer
        (`targets` unused). Q' = Q, or P*Q with the transformer's P pattern embeddings."""
        src, mask = self.features(images)
        hs, references = self.transformer(src, mask, self.anchors(), self.bbox_embed)
        return self.class_embed(hs), refine_boxes(self.bbox_embed(hs), references, DAB_DETR_EPS)

    def inference(self, logits: torch.Tensor, boxes: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The `num_select` best (query, class) pairs by sigmoid score (see `topk_detections`)."""
        return topk_detections(logits, boxes, self.num_select)
