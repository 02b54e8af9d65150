"""What the DETR family (DETR, DAB-DETR, Deformable DETR, DINO) shares: one base class.

Every member runs the same pipeline: normalise and pad the images -> features ->
transformer -> per decoder layer class logits and normalised cxcywh boxes ->
Hungarian-matched set losses (training) or per-image detections in the pixels of the
original image (eval). A member says how it gets its features and queries (`predict`)
and how the last layer becomes detections (`inference`); the base holds the rest:
pixel normalisation, targets in the head's box convention, the loss skeleton with
auxiliary decoder layers, postprocessing, and `from_config`, which builds the children
its constructor's annotations name. Shapes: B images, Q queries, K classes, L decoder
layers, D width.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torchvision.ops import box_convert

from ...config import BACKBONES, build, instantiate, join_path, key_path
from ...config.build import known_class
from ...config.types import type_hints
from ...layers import ImageList
from ..backbones.base import Backbone
from ..meta_arch import MetaArch
from .criterion import SetCriterion
from .transformer import MLP

__all__ = ["DETRBase", "Batch", "focal_class_head", "delta_box_head"]

Batch = list[dict[str, Any]]


def focal_class_head(d: int, num_classes: int) -> nn.Linear:
    """A linear class head whose sigmoid starts at the focal-loss prior probability 0.01."""
    head = nn.Linear(d, num_classes)
    nn.init.constant_(head.bias, -math.log((1 - 0.01) / 0.01))
    return head


def delta_box_head(d: int) -> MLP:
    """A 3-layer box MLP predicting a delta in inverse-sigmoid space, initially zero."""
    head = MLP(d, d, 4, 3)
    nn.init.zeros_(head.layers[-1].weight)
    nn.init.zeros_(head.layers[-1].bias)
    return head


class DETRBase(MetaArch):
    """The DETR family's shared parts; members add queries and heads.

    Batches are padded to their largest image only (`MetaArch` with size divisibility 0,
    as the official code bases): the padding masks tell the transformer which feature
    cells are padding.

    A member's constructor ends in ``**options``, passed on to this one: its signature and
    type hints (which `help`, `inspect.signature` and the config key checks read) also list
    the keyword-only arguments below (`aux_loss` and the pixel normalisation), whose
    defaults are written here once.

    Args:
        backbone: image -> feature maps by name.
        neck: backbone features -> the transformer's `num_levels` levels (None: the
            member projects one backbone level itself).
        transformer: the encoder-decoder (its `d_model` is the head width D).
        criterion: the set losses.
        num_classes: K, foreground classes.
        num_queries: Q, object queries.
        aux_loss: also supervise every intermediate decoder layer.
        pixel_mean: per-channel mean of `input_format` pixels in [0, 255].
        pixel_std: per-channel std.
        input_format: "RGB" or "BGR", the channel order the weights expect.
    """

    def __init__(
        self,
        backbone: Backbone,
        neck: Backbone | None,
        transformer: nn.Module,
        criterion: SetCriterion,
        num_classes: int,
        num_queries: int,
        *,
        aux_loss: bool = True,
        pixel_mean: Sequence[float] = (123.675, 116.28, 103.53),
        pixel_std: Sequence[float] = (58.395, 57.12, 57.375),
        input_format: str = "RGB",
    ) -> None:
        super().__init__(pixel_mean, pixel_std, input_format)
        if neck is not None and len(neck.output_shape()) != transformer.num_levels:
            raise ValueError(
                f"transformer.num_levels: {transformer.num_levels}, but the neck has "
                f"{len(neck.output_shape())} outputs"
            )
        self.backbone, self.neck, self.transformer, self.criterion = backbone, neck, transformer, criterion
        self.num_classes, self.num_queries, self.aux_loss = num_classes, num_queries, aux_loss

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Give an ``__init__(..., **options)`` the keyword-only parameters (and their type
        hints) of the next ``__init__`` in the method resolution order."""
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is None:
            return
        sig = inspect.signature(init)
        own = [p for p in sig.parameters.values() if p.kind is not p.VAR_KEYWORD]
        if len(own) == len(sig.parameters):
            return
        parent = super(cls, cls).__init__
        inherited = [
            p
            for p in inspect.signature(parent).parameters.values()
            if p.kind is p.KEYWORD_ONLY and p.name not in sig.parameters
        ]
        init.__signature__ = sig.replace(parameters=own + inherited)
        init.__annotations__ = {**type_hints(parent), **type_hints(init)}

    @classmethod
    def from_config(cls, cfg: Mapping) -> DETRBase:
        """Children from `build_children`; every other key is a constructor argument."""
        children = cls.build_children(cfg, key_path(cfg, "model"))
        return cls(**children, **cls.config_options(cfg, *children))

    @classmethod
    def build_children(cls, cfg: Mapping, path: str) -> dict[str, nn.Module | None]:
        """The backbone, the transformer (of the class `transformer` is annotated with) and
        the criterion; members with a neck or more children extend this."""
        return {
            "backbone": build(cfg["backbone"], BACKBONES),
            "transformer": cls.build_child("transformer", cfg, path),
            "criterion": cls.build_child("criterion", cfg, path, num_classes=cfg["num_classes"]),
        }

    @classmethod
    def build_child(cls, name: str, cfg: Mapping, path: str, **extra: Any) -> Any:
        """`cfg[name]` (an untyped dict, absent: defaults) built into the class the constructor
        annotates `name` with; an explicit null is None."""
        if name in cfg and cfg[name] is None:
            return None
        return instantiate(known_class(type_hints(cls)[name]), cfg.get(name), join_path(path, name), **extra)

    def forward(self, batch: Batch) -> dict[str, torch.Tensor] | list[dict[str, Any]]:
        """Losses (training) or predictions (eval) for a list of items (see docs/contracts.md)."""
        images = self.preprocess(batch)
        if not self.training:
            logits, boxes = self.predict(images)[:2]  # (L, B, Q, K or K+1), (L, B, Q, 4)
            return self.postprocess(*self.inference(logits[-1], boxes[-1]), batch)
        targets = self.prepare_targets(batch, images)
        return self.losses(self.predict(images, targets), targets)

    def predict(self, images: ImageList, targets: list[dict[str, torch.Tensor]] | None = None) -> tuple:
        """Class logits (L, B, Q, K or K+1) and boxes (L, B, Q, 4, normalised cxcywh) of every
        decoder layer first, then what the member's `losses` needs; `targets` only in training."""
        raise NotImplementedError

    def inference(self, logits: torch.Tensor, boxes: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Last-layer logits (B, Q, *) and boxes (B, Q, 4) -> scores (B, N), labels (B, N)
        int64, boxes (B, N, 4) cxcywh."""
        raise NotImplementedError

    def losses(self, outputs: tuple, targets: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """Set losses of the last decoder layer, and with `aux_loss` of every earlier one."""
        logits, boxes = outputs[:2]
        if not self.aux_loss:
            logits, boxes = logits[-1:], boxes[-1:]
        return self.criterion(logits, boxes, targets)

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
