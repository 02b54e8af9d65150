"""DETR: Carion et al., "End-to-End Object Detection with Transformers", ECCV 2020.

backbone (C5 or DC5) -> 1x1 projection -> transformer encoder-decoder with Q learned
object queries -> per query a class (K + "no object") and a box -> Hungarian-matched
set losses on every decoder layer. Shapes: B images, Q queries, K classes (foreground),
L decoder layers, D model width. Boxes inside the head are normalised (cx, cy, w, h)
relative to each image's unpadded size; the model's inputs and outputs follow the
detection contract (xyxy absolute pixels).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import box_convert

from ...config import BACKBONES, MODELS, build
from ...config.registry import check_keys
from ...layers import ImageList
from .criterion import SetCriterion
from .hungarian_matcher import HungarianMatcher
from .transformer import MLP, DETRTransformer

__all__ = ["DETR", "build_plain"]

Batch = list[dict[str, Any]]


def build_plain(cls: type, cfg: Mapping | None, path: str, **extra: Any) -> Any:
    """Build `cls` from a config dict without `type`, checking its keys (errors name the key path)."""
    path = getattr(cfg, "_key_path", "") or path
    cfg = cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg or {})
    check_keys(cfg, cls, path, extra)
    return cls(**cfg, **extra)


def build_criterion(cfg: Mapping | None, path: str, num_classes: int) -> SetCriterion:
    """`SetCriterion` from ``{matcher: {<HungarianMatcher options>}, <SetCriterion options>}``."""
    cfg = cfg or {}
    path = getattr(cfg, "_key_path", "") or path
    matcher = build_plain(HungarianMatcher, cfg.get("matcher"), f"{path}.matcher")
    rest = {k: v for k, v in cfg.items() if k != "matcher"}
    return build_plain(SetCriterion, rest, path, num_classes=num_classes, matcher=matcher)


@MODELS.register()
class DETR(nn.Module):
    """DETR (Carion et al., 2020).

    Args:
        backbone: a backbone whose `output_shape()` has `in_feature`.
        transformer: the encoder-decoder (its `d_model` is the head width D).
        criterion: the set losses (softmax classification over K+1 classes).
        num_classes: K, foreground classes.
        num_queries: Q, object queries.
        in_feature: the backbone output the transformer reads ("res5"; DC5 is a res5
            with output stride 16).
        aux_loss: also supervise every intermediate decoder layer.
        pixel_mean: per-channel mean of `input_format` pixels in [0, 255].
        pixel_std: per-channel std.
        input_format: "RGB" or "BGR", the channel order the weights expect.
    """

    def __init__(
        self,
        backbone: nn.Module,
        transformer: DETRTransformer,
        criterion: SetCriterion,
        num_classes: int,
        num_queries: int = 100,
        in_feature: str = "res5",
        aux_loss: bool = True,
        pixel_mean: Sequence[float] = (123.675, 116.28, 103.53),
        pixel_std: Sequence[float] = (58.395, 57.12, 57.375),
        input_format: str = "RGB",
    ) -> None:
        super().__init__()
        self._init_common(backbone, transformer, criterion, num_classes, in_feature, aux_loss)
        self._init_pixels(pixel_mean, pixel_std, input_format)
        d = transformer.d_model
        self.query_embed = nn.Embedding(num_queries, d)
        self.class_embed = nn.Linear(d, num_classes + 1)
        self.bbox_embed = MLP(d, d, 4, 3)

    def _init_common(self, backbone, transformer, criterion, num_classes, in_feature, aux_loss) -> None:
        shapes = backbone.output_shape()
        if in_feature not in shapes:
            raise ValueError(f"in_feature: backbone has no output {in_feature!r} (has {', '.join(shapes)})")
        self.backbone = backbone
        self.transformer = transformer
        self.criterion = criterion
        self.num_classes = num_classes
        self.in_feature = in_feature
        self.feature_stride = shapes[in_feature].stride
        self.aux_loss = aux_loss
        self.input_proj = nn.Conv2d(shapes[in_feature].channels, transformer.d_model, kernel_size=1)

    def _init_pixels(self, pixel_mean, pixel_std, input_format: str) -> None:
        if input_format not in ("RGB", "BGR"):
            raise ValueError(f"input_format: expected 'RGB' or 'BGR', got {input_format!r}")
        self.input_format = input_format
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), persistent=False)

    @classmethod
    def from_config(cls, cfg: Mapping) -> DETR:
        path = getattr(cfg, "_key_path", "model")
        kwargs = {k: v for k, v in cfg.items() if k not in ("type", "backbone", "transformer", "criterion")}
        return cls(
            backbone=build(cfg["backbone"], BACKBONES),
            transformer=build_plain(DETRTransformer, cfg.get("transformer"), f"{path}.transformer"),
            criterion=build_criterion(cfg.get("criterion"), f"{path}.criterion", cfg["num_classes"]),
            **kwargs,
        )

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def forward(self, batch: Batch) -> dict[str, torch.Tensor] | list[dict[str, Any]]:
        """Losses (training) or predictions (eval) for a list of items (see docs/contracts.md)."""
        images = self.preprocess(batch)
        logits, boxes = self.predict(images)  # (L, B, Q, K+1), (L, B, Q, 4)
        if self.training:
            if not self.aux_loss:
                logits, boxes = logits[-1:], boxes[-1:]
            return self.criterion(logits, boxes, self.prepare_targets(batch, images))
        return self.postprocess(*self.inference(logits[-1], boxes[-1]), batch)

    def preprocess(self, batch: Batch) -> ImageList:
        """uint8 CHW images -> normalised float images padded at the bottom/right."""
        images = [item["image"] for item in batch]
        return ImageList.from_uint8(images, self.pixel_mean, self.pixel_std, self.input_format)

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

    def predict(self, images: ImageList) -> tuple[torch.Tensor, torch.Tensor]:
        """Class logits (L, B, Q, K+1) and sigmoid cxcywh boxes (L, B, Q, 4) of every decoder layer."""
        src, mask = self.features(images)
        hs = self.transformer(src, mask, self.query_embed.weight)  # (L, B, Q, D)
        return self.class_embed(hs), self.bbox_embed(hs).sigmoid()

    def prepare_targets(self, batch: Batch, images: ImageList) -> list[dict[str, torch.Tensor]]:
        """Contract targets -> labels and boxes normalised cxcywh of the unpadded image.

        Crowd regions (``iscrowd``) and empty boxes are not objects to match.
        """
        targets = []
        for item, (h, w) in zip(batch, images.image_sizes):
            inst = item["instances"]
            boxes = inst["boxes"].to(self.device, torch.float32).reshape(-1, 4)
            labels = inst["labels"].to(self.device, torch.int64)
            keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
            if "iscrowd" in inst:
                keep &= ~inst["iscrowd"].to(self.device).bool()
            scale = boxes.new_tensor([w, h, w, h])
            targets.append(
                {"labels": labels[keep], "boxes": box_convert(boxes[keep], "xyxy", "cxcywh") / scale}
            )
        return targets

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

    def postprocess(
        self, scores: torch.Tensor, labels: torch.Tensor, boxes: torch.Tensor, batch: Batch
    ) -> list[dict[str, Any]]:
        """Normalised cxcywh -> xyxy pixels of each original image (``orig_size``)."""
        results = []
        for s, c, b, item in zip(scores, labels, boxes, batch):
            h, w = item.get("orig_size", item["image"].shape[-2:])
            xyxy = box_convert(b, "cxcywh", "xyxy") * b.new_tensor([w, h, w, h])
            results.append({"instances": {"boxes": xyxy.detach(), "scores": s.detach(), "labels": c}})
        return results
