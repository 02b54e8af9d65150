"""mmdetection Faster R-CNN checkpoints -> densenets' `FasterRCNN`.

A released mmdetection model (``{"meta": ..., "state_dict": ...}``) of
``faster-rcnn_r50_fpn_1x_coco``, its R101 and caffe-style variants and the DCN ones
(``*-dconv-c3-c5``: DCNv1, ``*-mdconv-c3-c5``: modulated DCNv2) converts to the configs
``configs/detection/mmdet_faster_rcnn_*.yaml``, which rebuild it layer for layer:

- ``backbone``: mmdet's ResNet keys are torchvision's (``conv1``, ``bn1``, ``layerK``,
  ``downsample.0/1``) plus ``conv2.conv_offset`` in DCN stages, whose output layout
  (2 * 9 offsets in (dy, dx) pairs, then 9 mask logits for DCNv2) is ours;
- ``neck.lateral_convs.i`` / ``neck.fpn_convs.i`` -> ``neck.lateral{i+2}`` /
  ``neck.output{i+2}`` (the extra P6 is a parameter-free max pool in both);
- ``rpn_head.rpn_conv`` / ``rpn_cls`` / ``rpn_reg`` -> ``rpn.head.conv`` /
  ``objectness_logits`` / ``anchor_deltas`` (sigmoid objectness, one logit per anchor);
- ``roi_head.bbox_head.shared_fcs.0/1`` -> ``roi_heads.box_head.fc1/fc2``; ``fc_cls``
  (K + 1 scores, background last, as ours) and ``fc_reg`` (K * 4 deltas) ->
  ``roi_heads.box_predictor.cls_score`` / ``bbox_pred``.

mmdet's ``DeltaXYWHBBoxCoder`` with ``target_stds`` s and zero means is our `BoxCoder`
with weights ``1 / s`` (RPN 1, 1, 1, 1; RoI head 10, 10, 5, 5).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch

from . import register_converter
from .mmseg import _tensor, mmseg_resnet_to_densenets
from .resnet import unwrap_state_dict

__all__ = ["mmdet_faster_rcnn_to_densenets"]

_NORM = r"(?:bn|gn)"

# FPN levels of the neck's inputs: mmdet's start_level 0 reads res2..res5.
_RULES: list[tuple[str, Any]] = [
    (r"neck\.lateral_convs\.(\d)\.conv\.(weight|bias)", lambda m: f"neck.lateral{int(m[1]) + 2}.conv.{m[2]}"),
    (rf"neck\.lateral_convs\.(\d)\.{_NORM}\.(\w+)", lambda m: f"neck.lateral{int(m[1]) + 2}.norm.{m[2]}"),
    (r"neck\.fpn_convs\.([0-3])\.conv\.(weight|bias)", lambda m: f"neck.output{int(m[1]) + 2}.conv.{m[2]}"),
    (rf"neck\.fpn_convs\.([0-3])\.{_NORM}\.(\w+)", lambda m: f"neck.output{int(m[1]) + 2}.norm.{m[2]}"),
    (r"rpn_head\.rpn_conv\.(weight|bias)", lambda m: f"rpn.head.conv.{m[1]}"),
    (r"rpn_head\.rpn_cls\.(weight|bias)", lambda m: f"rpn.head.objectness_logits.{m[1]}"),
    (r"rpn_head\.rpn_reg\.(weight|bias)", lambda m: f"rpn.head.anchor_deltas.{m[1]}"),
    (r"roi_head\.bbox_head\.shared_fcs\.([01])\.(weight|bias)", lambda m: f"roi_heads.box_head.fc{int(m[1]) + 1}.{m[2]}"),
    (r"roi_head\.bbox_head\.fc_cls\.(weight|bias)", lambda m: f"roi_heads.box_predictor.cls_score.{m[1]}"),
    (r"roi_head\.bbox_head\.fc_reg\.(weight|bias)", lambda m: f"roi_heads.box_predictor.bbox_pred.{m[1]}"),
]  # fmt: skip


def _check_heads(out: Mapping[str, torch.Tensor], source: str) -> None:
    """Reject layouts these rules would load wrongly: softmax RPN, class-agnostic boxes."""
    rpn_cls, rpn_reg = out.get("rpn.head.objectness_logits.weight"), out.get("rpn.head.anchor_deltas.weight")
    if rpn_cls is None or rpn_reg is None or "roi_heads.box_predictor.cls_score.weight" not in out:
        raise KeyError(f"{source}: no rpn_head.rpn_cls / roi_head.bbox_head.fc_cls; is this a Faster R-CNN?")
    if rpn_reg.shape[0] != 4 * rpn_cls.shape[0]:
        raise ValueError(
            f"{source}: rpn_head.rpn_cls has {rpn_cls.shape[0]} outputs for {rpn_reg.shape[0] // 4} anchors; "
            "only sigmoid objectness (use_sigmoid=True, one logit per anchor) converts"
        )
    num_classes = out["roi_heads.box_predictor.cls_score.weight"].shape[0] - 1
    reg = out["roi_heads.box_predictor.bbox_pred.weight"].shape[0]
    if reg != 4 * num_classes:
        raise ValueError(
            f"{source}: roi_head.bbox_head.fc_reg has {reg} outputs for {num_classes} classes; "
            "only class-specific regression (reg_class_agnostic=False) converts"
        )


def mmdet_faster_rcnn_to_densenets(state_dict: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """An mmdetection ``FasterRCNN`` (ResNet-FPN, ``Shared2FCBBoxHead``) state dict -> ours.

    Raises:
        KeyError: a key no rule knows (the message names it).
        ValueError: a head layout our Faster R-CNN does not have.
    """
    source = "mmdet"
    out = mmseg_resnet_to_densenets(state_dict, "backbone.", "backbone.", source)
    rules = [(re.compile(p), fn) for p, fn in _RULES]
    for key, value in state_dict.items():
        if key.startswith("backbone."):
            continue
        for pattern, fn in rules:
            m = pattern.fullmatch(key)
            if m:
                out[fn(m)] = _tensor(value)
                break
        else:
            raise KeyError(f"{source}: no rule maps checkpoint key {key!r} to densenets' Faster R-CNN")
    _check_heads(out, source)
    return out


@register_converter("mmdet")
def convert_mmdet(obj: Any) -> dict[str, torch.Tensor]:
    """An mmdetection Faster R-CNN checkpoint (``{"meta", "state_dict"}``) -> our FasterRCNN."""
    return mmdet_faster_rcnn_to_densenets(unwrap_state_dict(obj))
