"""Faster R-CNN (Ren et al., 2015) with a Feature Pyramid Network (Lin et al., 2017)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from densenets.config import BACKBONES, HEADS, MODELS, NECKS, build
from densenets.layers import ImageList

__all__ = ["FasterRCNN"]


@MODELS.register()
class FasterRCNN(nn.Module):
    """Faster R-CNN: normalise -> pad -> backbone -> FPN -> RPN -> RoI heads -> rescale.

    Args:
        backbone: image -> feature maps (``res2``..``res5``).
        neck: backbone features -> pyramid (``p2``..``p6``); None uses the backbone's.
        rpn: proposals from the pyramid.
        roi_heads: detections (or losses) from the pyramid and proposals.
        pixel_mean: per-channel mean, in `input_format` order, 0-255 scale.
        pixel_std: per-channel std, same order and scale.
        input_format: "RGB" or "BGR": the channel order the backbone was trained on.
        size_divisibility: pad the batch to a multiple of this (32 for FPN).
    """

    def __init__(
        self,
        backbone: nn.Module,
        neck: nn.Module | None,
        rpn: nn.Module,
        roi_heads: nn.Module,
        pixel_mean: Sequence[float] = (123.675, 116.28, 103.53),
        pixel_std: Sequence[float] = (58.395, 57.12, 57.375),
        input_format: str = "RGB",
        size_divisibility: int = 32,
    ) -> None:
        super().__init__()
        if input_format not in ("RGB", "BGR"):
            raise ValueError(f"FasterRCNN: input_format must be RGB or BGR, got {input_format!r}")
        self.backbone = backbone
        self.neck = neck
        self.rpn = rpn
        self.roi_heads = roi_heads
        self.input_format = input_format
        self.size_divisibility = max(size_divisibility, getattr(backbone, "size_divisibility", 0) or 0)
        self.register_buffer(
            "pixel_mean", torch.tensor(pixel_mean, dtype=torch.float32).view(-1, 1, 1), persistent=False
        )
        self.register_buffer(
            "pixel_std", torch.tensor(pixel_std, dtype=torch.float32).view(-1, 1, 1), persistent=False
        )

    @classmethod
    def from_config(cls, cfg: Mapping) -> FasterRCNN:
        backbone = build(cfg.backbone, BACKBONES)
        neck = build(cfg.get("neck"), NECKS, input_shape=backbone.output_shape())
        shapes = neck.output_shape() if neck is not None else backbone.output_shape()
        rpn = build(cfg.rpn, HEADS, input_shape=shapes)
        roi_heads = build(cfg.roi_heads, HEADS, input_shape=shapes)
        options = {k: v for k, v in cfg.items() if k not in ("type", "backbone", "neck", "rpn", "roi_heads")}
        return cls(backbone, neck, rpn, roi_heads, **options)

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

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

    def preprocess(self, batch: list[dict[str, Any]]) -> ImageList:
        """uint8 RGB images -> normalised float batch, padded to `size_divisibility`."""
        images = [item["image"] for item in batch]
        return ImageList.from_uint8(images, self.pixel_mean, self.pixel_std, self.input_format, self.size_divisibility)

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
