"""Faster R-CNN (Ren et al., 2015) with a Feature Pyramid Network (Lin et al., 2017)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from densenets.config import BACKBONES, HEADS, MODELS, NECKS, build
from densenets.modeling.backbones.base import Backbone
from densenets.modeling.meta_arch import MetaArch

__all__ = ["FasterRCNN"]


@MODELS.register()
class FasterRCNN(MetaArch):
    """Faster R-CNN: normalise -> pad -> backbone -> FPN -> RPN -> RoI heads -> rescale.

    Args:
        backbone: image -> feature maps (``res2``..``res5``).
        neck: backbone features -> pyramid (``p2``..``p6``); None uses the backbone's.
        rpn: proposals from the pyramid.
        roi_heads: detections (or losses) from the pyramid and proposals.
        pixel_mean: per-channel mean, in `input_format` order, 0-255 scale.
        pixel_std: per-channel std, same order and scale.
        input_format: "RGB" or "BGR": the channel order the backbone was trained on.
        size_divisibility: pad the batch to a multiple of this (32 for FPN); the
            backbone's and the neck's own requirement wins when it is larger.
    """

    def __init__(
        self,
        backbone: Backbone,
        neck: Backbone | None,
        rpn: nn.Module,
        roi_heads: nn.Module,
        pixel_mean: Sequence[float] = (123.675, 116.28, 103.53),
        pixel_std: Sequence[float] = (58.395, 57.12, 57.375),
        input_format: str = "RGB",
        size_divisibility: int = 32,
    ) -> None:
        needed = max(backbone.size_divisibility, neck.size_divisibility if neck is not None else 0)
        super().__init__(pixel_mean, pixel_std, input_format, max(size_divisibility, needed))
        self.backbone = backbone
        self.neck = neck
        self.rpn = rpn
        self.roi_heads = roi_heads

    @classmethod
    def from_config(cls, cfg: Mapping) -> FasterRCNN:
        backbone = build(cfg.backbone, BACKBONES)
        neck = build(cfg.get("neck"), NECKS, input_shape=backbone.output_shape())
        shapes = neck.output_shape() if neck is not None else backbone.output_shape()
        rpn = build(cfg.rpn, HEADS, input_shape=shapes)
        roi_heads = build(cfg.roi_heads, HEADS, input_shape=shapes)
        return cls(
            backbone, neck, rpn, roi_heads, **cls.config_options(cfg, "backbone", "neck", "rpn", "roi_heads")
        )

    def forward(self, batch: list[dict[str, Any]]) -> dict[str, torch.Tensor] | list[dict[str, Any]]:
        """Losses (training) or per-image ``{"instances": {boxes, scores, labels}}`` (eval).

        Args:
            batch: items with ``image`` uint8 Tensor[3, H, W] RGB; in training also
                ``instances`` with ``boxes`` Tensor[G, 4] xyxy (pixels of `image`) and
                ``labels`` Tensor[G] int64 in 0..K-1; in eval ``orig_size`` (H0, W0).
        """
        images = self.preprocess(batch)
        features = self.extract_features(images.tensor)
        targets = self.targets(batch) if self.training else None
        proposals, _, rpn_losses = self.rpn(images, features, targets)
        if self.training:
            return {**rpn_losses, **self.roi_heads(features, proposals, images.image_sizes, targets)}
        detections = self.roi_heads(features, proposals, images.image_sizes)
        return self.postprocess(detections, batch, images.image_sizes)

    def extract_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Tensor[N, 3, H, W] normalised -> feature maps by name."""
        features = self.backbone(x)
        return self.neck(features) if self.neck is not None else features

    def targets(self, batch: list[dict[str, Any]]) -> list[dict[str, torch.Tensor]]:
        """Training targets on the model's device; crowd boxes (if marked) left out."""
        targets = []
        for item in batch:
            if "instances" not in item:
                raise ValueError(f"FasterRCNN: training item {item.get('image_id', '?')} has no 'instances'")
            inst = item["instances"]
            boxes = torch.as_tensor(inst["boxes"], dtype=torch.float32, device=self.device).reshape(-1, 4)
            labels = torch.as_tensor(inst["labels"], dtype=torch.int64, device=self.device).reshape(-1)
            if "iscrowd" in inst:
                keep = ~torch.as_tensor(inst["iscrowd"], device=self.device).bool().reshape(-1)
                boxes, labels = boxes[keep], labels[keep]
            targets.append({"boxes": boxes, "labels": labels})
        return targets

    def postprocess(
        self,
        detections: list[dict[str, torch.Tensor]],
        batch: list[dict[str, Any]],
        image_sizes: list[tuple[int, int]],
    ) -> list[dict[str, Any]]:
        """Scale boxes from the input image's size to ``orig_size`` and clip them there."""
        results = []
        for det, item, (h, w) in zip(detections, batch, image_sizes):
            oh, ow = (int(s) for s in item.get("orig_size", (h, w)))
            scale = torch.tensor([ow / w, oh / h, ow / w, oh / h], dtype=torch.float32, device=self.device)
            boxes = det["boxes"] * scale
            boxes[:, 0::2] = boxes[:, 0::2].clamp(0, ow)
            boxes[:, 1::2] = boxes[:, 1::2].clamp(0, oh)
            results.append({"instances": {"boxes": boxes, "scores": det["scores"], "labels": det["labels"]}})
        return results
