"""DETR: Carion et al., "End-to-End Object Detection with Transformers", ECCV 2020.

backbone (C5 or DC5) -> 1x1 projection -> transformer encoder-decoder with Q learned
object queries -> per query a class (K + "no object") and a box -> Hungarian-matched
set losses on every decoder layer. Shapes: B images, Q queries, K classes (foreground),
L decoder layers, D model width. Boxes inside the head are normalised (cx, cy, w, h)
relative to each image's unpadded size; the model's inputs and outputs follow the
detection contract (xyxy absolute pixels).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...config import MODELS
from ...layers import ImageList
from ..backbones.base import Backbone
from .criterion import SetCriterion
from .detr_base import DETRBase
from .transformer import MLP, DETRTransformer

__all__ = ["DETR", "SingleScaleDETR"]


class SingleScaleDETR(DETRBase):
    """A DETR-family member on one backbone level through a 1x1 input projection, without a
    neck (DETR, DAB-DETR); its constructor calls `_init_input_proj` after the base's."""

    def _init_input_proj(self, in_feature: str) -> None:
        """`input_proj`: backbone output `in_feature` ("res5"; DC5 is a res5 with output
        stride 16) -> the transformer's width D."""
        shapes = self.backbone.output_shape()
        if in_feature not in shapes:
            raise ValueError(f"in_feature: backbone has no output {in_feature!r} (has {', '.join(shapes)})")
        self.in_feature = in_feature
        self.feature_stride = shapes[in_feature].stride
        self.input_proj = nn.Conv2d(shapes[in_feature].channels, self.transformer.d_model, kernel_size=1)

    def features(self, images: ImageList) -> tuple[torch.Tensor, torch.Tensor]:
        """Projected backbone features (B, D, h, w) and their padding mask (B, h, w), True = pad."""
        feat = self.backbone(images.tensor)[self.in_feature]
        return self.input_proj(feat), self.feature_mask(images, feat.shape[-2:])

    def feature_mask(self, images: ImageList, size: Sequence[int]) -> torch.Tensor:
        """The pixel padding mask shrunk to the features by nearest-neighbour interpolation.

        As the official DETR and DAB-DETR (models/backbone.py): feature row i is padding
        when pixel row floor(i * H / h) of the padded batch is. With a batch padded to a
        size that is not a multiple of the stride this marks one more row (or column)
        valid than ceil(h_image / stride) for some images, and the checkpoints were
        trained and evaluated that way.

        Args:
            images: the padded batch, (B, 3, H, W).
            size: (h, w) of the feature map.

        Returns:
            Tensor[B, h, w] bool, True = padding.
        """
        pixels = images.padding_mask()[None].float()  # (1, B, H, W)
        return F.interpolate(pixels, size=tuple(size), mode="nearest").to(torch.bool)[0]


@MODELS.register()
class DETR(SingleScaleDETR):
    """DETR (Carion et al., 2020).

    Args:
        backbone: a backbone whose `output_shape()` has `in_feature`.
        transformer: the encoder-decoder (its `d_model` is the head width D).
        criterion: the set losses (softmax classification over K+1 classes).
        num_classes: K, foreground classes.
        num_queries: Q, object queries.
        in_feature: the backbone output the transformer reads ("res5"; DC5 is a res5
            with output stride 16).
        **options: `aux_loss`, `pixel_mean`, `pixel_std`, `input_format` (see `DETRBase`).
    """

    def __init__(
        self,
        backbone: Backbone,
        transformer: DETRTransformer,
        criterion: SetCriterion,
        num_classes: int,
        num_queries: int = 100,
        in_feature: str = "res5",
        **options: Any,
    ) -> None:
        super().__init__(backbone, None, transformer, criterion, num_classes, num_queries, **options)
        self._init_input_proj(in_feature)
        d = transformer.d_model
        self.query_embed = nn.Embedding(num_queries, d)
        self.class_embed = nn.Linear(d, num_classes + 1)
        self.bbox_embed = MLP(d, d, 4, 3)

    def predict(self, images: ImageList, targets: list | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Class logits (L, B, Q, K+1) and sigmoid cxcywh boxes (L, B, Q, 4) of every decoder
        layer (`targets` unused)."""
        src, mask = self.features(images)
        hs = self.transformer(src, mask, self.query_embed.weight)  # (L, B, Q, D)
        return self.class_embed(hs), self.bbox_embed(hs).sigmoid()

    def inference(
        self, logits: torch.Tensor, boxes: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Every query is a detection: its most likely class other than no-object.

        Args:
            logits (Tensor[B, Q, K+1]), boxes (Tensor[B, Q, 4]): last-layer outputs.

        Returns:
            scores (Tensor[B, Q]), labels (Tensor[B, Q] int64), boxes (Tensor[B, Q, 4] cxcywh).
        """
        scores, labels = logits.softmax(-1)[..., :-1].max(-1)
        return scores, labels, boxes
