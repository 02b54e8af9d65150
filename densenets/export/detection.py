"""Export wrappers of the detectors: Faster R-CNN (FPN, DCN backbones) and the DETR family.

Shapes: L RPN levels, A anchors per cell, R proposals, K foreground classes, D detections.
Everything runs on one image; counts that depend on the data (boxes above the score
threshold, boxes NMS keeps) stay tensors, so that zero detections and more than
`detections_per_image` candidates go through the same graph.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import box_convert, nms

from densenets.ops import roi_align

from .wrappers import normalize_and_pad

__all__ = ["DETRExport", "FasterRCNNExport", "batched_nms"]


def _top_k(x: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """`x.topk(min(k, len(x)))` along the last dim, with the min kept symbolic in both
    exporters (a Python min would freeze the example's length into the graph)."""
    n = x.shape[-1]
    if torch.onnx.is_in_onnx_export():
        k = torch.clamp(torch._shape_as_tensor(x)[-1:], max=k)  # 1-element int64 tensor
        return x.topk(k, dim=-1)  # type: ignore[arg-type]
    return x.topk(torch.sym_min(k, n), dim=-1)


def batched_nms(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    """NMS within each class of `idxs`: torchvision's coordinate trick (boxes of each class
    shifted apart) without its Python branches on the number of boxes, which neither
    exporter can follow; an empty input gives an empty output.

    Args:
        boxes (Tensor[B, 4]) xyxy, scores (Tensor[B]), idxs (Tensor[B] int64).

    Returns:
        Tensor[B'] int64: kept indices, by decreasing score.
    """
    top = torch.cat((boxes.flatten(), boxes.new_zeros(1))).max()  # 0 for no boxes
    shifted = boxes + (idxs.to(boxes) * (top + 1))[:, None]
    return nms(shifted, scores, iou_threshold)


def _clip(boxes: Tensor, h: Tensor | int, w: Tensor | int) -> Tensor:
    """Clip xyxy boxes (Tensor[..., 4]) to [0, w] x [0, h]; `h`, `w` traced tensors (ONNX)
    or (sym)ints (`torch.export`, where making them tensors would fix their values)."""
    x, y = boxes[..., 0::2].clamp(min=0), boxes[..., 1::2].clamp(min=0)
    if isinstance(w, Tensor):
        x, y = torch.min(x, w.to(x.dtype)), torch.min(y, h.to(y.dtype))
    else:
        x, y = x.clamp(max=w), y.clamp(max=h)
    return torch.stack((x[..., 0], y[..., 0], x[..., 1], y[..., 1]), dim=-1)


def _size(image: Tensor) -> tuple[Tensor | int, Tensor | int]:
    """(h, w) of a [3, H, W] image: traced tensors in ONNX export, (sym)ints otherwise."""
    if torch.onnx.is_in_onnx_export():
        shape = torch._shape_as_tensor(image)
        return shape[1], shape[2]
    return image.shape[1], image.shape[2]


class FasterRCNNExport(nn.Module):
    """`FasterRCNN` on one uint8 image -> boxes, scores, labels (input-image pixels)."""

    task = "detection"

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """uint8 Tensor[3, H, W] RGB -> boxes Tensor[D, 4], scores Tensor[D], labels Tensor[D] int64."""
        m = self.model
        h, w = _size(image)
        x = normalize_and_pad(image, m, m.size_divisibility)
        features = m.extract_features(x)
        proposals = self.proposals(features, x, h, w)
        return self.detect(features, proposals, h, w)

    def proposals(self, features: dict[str, Tensor], x: Tensor, h, w) -> Tensor:
        """RPN: top-k per level, decode, clip, drop small, NMS per level -> Tensor[R, 4]."""
        rpn = self.model.rpn
        feats = [features[f] for f in rpn.in_features]
        logits, deltas = rpn.head(feats)
        boxes, scores, levels = [], [], []
        for level, (f, lg, dl) in enumerate(zip(feats, logits, deltas)):
            anchors = rpn.anchor_generator._grid_anchors(level, f.shape[-2:], x.shape[-2:])  # (M_l, 4)
            lg = lg.permute(0, 2, 3, 1).reshape(-1)  # (M_l,), anchor-minor
            dl = dl.view(-1, 4, dl.shape[-2], dl.shape[-1]).permute(2, 3, 0, 1).reshape(-1, 4)  # (M_l, 4)
            top_scores, idx = _top_k(lg, rpn.pre_nms_topk[1])
            boxes.append(rpn.box_coder.decode(dl[idx], anchors[idx]))
            scores.append(top_scores)
            levels.append(torch.full_like(idx, level))
        boxes, scores, levels = _clip(torch.cat(boxes), h, w), torch.cat(scores), torch.cat(levels)
        keep = ((boxes[:, 2] - boxes[:, 0]) > rpn.min_box_size) & (
            (boxes[:, 3] - boxes[:, 1]) > rpn.min_box_size
        )
        keep = (keep & torch.isfinite(boxes).all(dim=1) & torch.isfinite(scores)).nonzero()[:, 0]
        boxes, scores, levels = boxes[keep], scores[keep], levels[keep]
        keep = batched_nms(boxes, scores, levels, rpn.nms_thresh)[: rpn.post_nms_topk[1]]
        return boxes[keep]

    def pool(self, features: dict[str, Tensor], proposals: Tensor) -> Tensor:
        """Multi-level RoIAlign of Tensor[R, 4] -> Tensor[R, C, S, S] (ROIPooler's rule)."""
        from densenets.modeling.detection.poolers import assign_boxes_to_levels

        heads = self.model.roi_heads
        pooler = heads.pooler
        feats = [features[f] for f in heads.in_features]
        rois = torch.cat((torch.zeros_like(proposals[:, :1]), proposals), dim=1)  # (R, 5), image 0
        pool = dict(
            output_size=pooler.output_size, sampling_ratio=pooler.sampling_ratio, aligned=pooler.aligned
        )
        if len(feats) == 1:
            return roi_align(feats[0], rois, spatial_scale=pooler.scales[0], **pool)
        levels = assign_boxes_to_levels(
            proposals,
            pooler.min_level,
            pooler.max_level,
            pooler.canonical_box_size,
            pooler.canonical_level,
            pooler.eps,
        )
        pooled, order = [], []
        for level, (feature, scale) in enumerate(zip(feats, pooler.scales)):
            idx = (levels == level).nonzero()[:, 0]
            pooled.append(roi_align(feature, rois[idx], spatial_scale=scale, **pool))
            order.append(idx)
        return torch.cat(pooled)[torch.cat(order).argsort()]  # back to the order of `proposals`

    def detect(self, features: dict[str, Tensor], proposals: Tensor, h, w) -> tuple[Tensor, Tensor, Tensor]:
        """Box head -> per-class boxes -> score threshold -> per-class NMS -> top D."""
        heads = self.model.roi_heads
        pred = heads.box_predictor
        logits, deltas = pred(heads.box_head(self.pool(features, proposals)))
        k = pred.num_classes
        boxes = _clip(pred.box_coder.decode(deltas, proposals).view(-1, k, 4), h, w)  # (R, K, 4)
        probs = F.softmax(logits, dim=-1)[:, :-1]  # (R, K), background dropped
        flat = (probs.reshape(-1) > pred.score_thresh).nonzero()[:, 0]  # indices roi * K + class
        boxes, scores, labels = boxes.reshape(-1, 4)[flat], probs.reshape(-1)[flat], flat % k
        if pred.min_box_size > 0:
            size_ok = ((boxes[:, 2] - boxes[:, 0]) > pred.min_box_size) & (
                (boxes[:, 3] - boxes[:, 1]) > pred.min_box_size
            )
            keep = size_ok.nonzero()[:, 0]
            boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        keep = batched_nms(boxes, scores, labels, pred.nms_thresh)[: pred.detections_per_image]
        return boxes[keep], scores[keep], labels[keep]


class DETRExport(nn.Module):
    """DETR / DAB-DETR on one uint8 image -> boxes, scores, labels with the model's own
    `inference` rule (DETR: every query's best foreground class; DAB-DETR: the
    `num_select` best query-class pairs), so the number of detections is fixed."""

    task = "detection"

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """uint8 Tensor[3, H, W] RGB -> boxes Tensor[Q', 4] xyxy pixels, scores Tensor[Q'], labels Tensor[Q']."""
        from densenets.layers import ImageList

        m = self.model
        h, w = _size(image)
        x = normalize_and_pad(image, m, 0)  # one image: no padding, so no padded feature cell

        def features(images: ImageList) -> tuple[Tensor, Tensor]:
            src = m.input_proj(m.backbone(images.tensor)[m.in_feature])  # (1, D, h', w')
            return src, torch.zeros_like(src[:, 0], dtype=torch.bool)  # (1, h', w'), nothing padded

        # `predict` reads the padding mask from Python sizes (`feature_mask`); with one
        # image it is all False, which this override says with traceable ops.
        m.features = features
        try:
            logits, boxes = m.predict(ImageList(x, [tuple(x.shape[-2:])]))  # sizes unused by `features`
        finally:
            del m.features
        scores, labels, boxes = m.inference(logits[-1], boxes[-1])  # (1, Q'), (1, Q'), (1, Q', 4) cxcywh
        return self.to_pixels(boxes[0], h, w), scores[0], labels[0]

    @staticmethod
    def to_pixels(boxes: Tensor, h, w) -> Tensor:
        """Normalised cxcywh Tensor[D, 4] -> xyxy Tensor[D, 4] in pixels of an h x w image."""
        b = box_convert(boxes, "cxcywh", "xyxy")
        return torch.stack((b[:, 0] * w, b[:, 1] * h, b[:, 2] * w, b[:, 3] * h), dim=-1)
