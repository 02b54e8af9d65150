"""Faster R-CNN checkpoints of torchvision and detectron2 -> densenets' `FasterRCNN`.

Our keys: ``backbone.*`` (ResNet), ``neck.*`` (FPN), ``rpn.head.{conv,objectness_logits,
anchor_deltas}``, ``roi_heads.box_head.fc{1,2}``, ``roi_heads.box_predictor.{cls_score,
bbox_pred}`` with K + 1 scores (background last) and K * 4 deltas.

torchvision's predictor has background first and deltas for it too, so its rows are
permuted and the background deltas dropped: torchvision's label j (1..K) is our j - 1.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from . import register_converter
from .resnet import (
    detectron2_resnet_to_densenets,
    find_prefix,
    torchvision_fpn_to_densenets,
    torchvision_resnet_to_densenets,
    unwrap_state_dict,
)

__all__ = ["torchvision_faster_rcnn_to_densenets", "detectron2_faster_rcnn_to_densenets"]


def _tensor(value: Any) -> torch.Tensor:
    return value if isinstance(value, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(value))


def _map(state_dict: Mapping[str, Any], rules: dict[str, str], source: str) -> dict[str, torch.Tensor]:
    """Rename the keys that match `rules` (regex -> template); each rule must match."""
    out: dict[str, torch.Tensor] = {}
    for pattern, template in rules.items():
        hits = [k for k in state_dict if re.fullmatch(pattern, k)]
        if not hits:
            raise KeyError(
                f"{source}: no checkpoint key matches {pattern!r}; is this a Faster R-CNN (FPN) checkpoint?"
            )
        for key in hits:
            out[re.sub(pattern, template, key)] = _tensor(state_dict[key])
    return out


def _check_all_used(
    state_dict: Mapping[str, Any], used: set[str], source: str, ignore: tuple[str, ...] = ()
) -> None:
    left = [k for k in state_dict if k not in used and not k.startswith(ignore)]
    if left:
        raise KeyError(f"{source}: no rule maps checkpoint keys {left[:5]}{' ...' if len(left) > 5 else ''}")


def torchvision_faster_rcnn_to_densenets(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """torchvision ``fasterrcnn_resnet50_fpn`` (v1) state dict -> ours.

    Use with ``configs/detection/faster_rcnn_r50_fpn_torchvision.yaml`` (K = 90: the COCO
    category ids 1..90, gaps included, as torchvision's labels).
    """
    source = "torchvision Faster R-CNN"
    out = torchvision_resnet_to_densenets(state_dict, "backbone.body.", "backbone.")
    out.update(torchvision_fpn_to_densenets(state_dict, "backbone.fpn.", "neck."))
    rules = {
        r"rpn\.head\.conv(?:\.0\.0)?\.(weight|bias)": r"rpn.head.conv.\1",
        r"rpn\.head\.cls_logits\.(weight|bias)": r"rpn.head.objectness_logits.\1",
        r"rpn\.head\.bbox_pred\.(weight|bias)": r"rpn.head.anchor_deltas.\1",
        r"roi_heads\.box_head\.fc6\.(weight|bias)": r"roi_heads.box_head.fc1.\1",
        r"roi_heads\.box_head\.fc7\.(weight|bias)": r"roi_heads.box_head.fc2.\1",
    }
    out.update(_map(state_dict, rules, source))
    for name in ("weight", "bias"):
        cls = _tensor(state_dict[f"roi_heads.box_predictor.cls_score.{name}"])
        box = _tensor(state_dict[f"roi_heads.box_predictor.bbox_pred.{name}"])
        out[f"roi_heads.box_predictor.cls_score.{name}"] = torch.cat((cls[1:], cls[:1]))  # background last
        out[f"roi_heads.box_predictor.bbox_pred.{name}"] = box[4:].clone()  # no background deltas
    used = {
        k for k in state_dict if k.startswith(("backbone.body.", "backbone.fpn.", "rpn.", "roi_heads.box_"))
    }
    _check_all_used(state_dict, used, source)
    return out


def detectron2_faster_rcnn_to_densenets(state_dict: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """detectron2 ``GeneralizedRCNN`` (ResNet-FPN, 2fc box head) state dict -> ours.

    Use with ``configs/detection/faster_rcnn_r50_fpn_detectron2.yaml``; model-zoo
    ``model_final_*.pkl`` files hold numpy arrays (read them with
    `densenets.checkpoint.pickle_io.load_pickle`).
    """
    source = "detectron2 Faster R-CNN"
    out = detectron2_resnet_to_densenets(state_dict, "backbone.bottom_up.", "backbone.")
    rules = {
        r"backbone\.fpn_lateral(\d)\.(weight|bias)": r"neck.lateral\1.conv.\2",
        r"backbone\.fpn_output(\d)\.(weight|bias)": r"neck.output\1.conv.\2",
        r"proposal_generator\.rpn_head\.(conv|objectness_logits|anchor_deltas)\.(weight|bias)": r"rpn.head.\1.\2",
        r"roi_heads\.box_head\.fc(\d)\.(weight|bias)": r"roi_heads.box_head.fc\1.\2",
        r"roi_heads\.box_predictor\.(cls_score|bbox_pred)\.(weight|bias)": r"roi_heads.box_predictor.\1.\2",
    }
    out.update(_map(state_dict, rules, source))
    used = {k for k in state_dict if k.startswith(("backbone.", "proposal_generator.", "roi_heads."))}
    _check_all_used(state_dict, used, source, ignore=("pixel_mean", "pixel_std"))
    return out


@register_converter("torchvision-faster-rcnn")
def convert_torchvision_faster_rcnn(obj: Any) -> dict[str, torch.Tensor]:
    """A torchvision Faster R-CNN checkpoint (``fasterrcnn_resnet50_fpn_coco-*.pth``) -> ours."""
    sd = unwrap_state_dict(obj)
    prefix = find_prefix(sd, "rpn.head.cls_logits.weight")
    if prefix is None:
        raise KeyError("torchvision-faster-rcnn: no 'rpn.head.cls_logits.weight'; is this the right format?")
    return torchvision_faster_rcnn_to_densenets(
        {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}
    )


@register_converter("detectron2-faster-rcnn")
def convert_detectron2_faster_rcnn(obj: Any) -> dict[str, torch.Tensor]:
    """A detectron2 model-zoo Faster R-CNN (``model_final_*.pkl``, ``{"model": {...}}``) -> ours."""
    sd = unwrap_state_dict(obj)
    if "proposal_generator.rpn_head.conv.weight" not in sd:
        raise KeyError(
            "detectron2-faster-rcnn: no 'proposal_generator.rpn_head.conv.weight'; is this the right format?"
        )
    return detectron2_faster_rcnn_to_densenets(sd)
