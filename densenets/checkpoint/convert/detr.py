"""Key maps from the official DETR and DAB-DETR checkpoints to densenets' `DETR` / `DABDETR`.

Official files (``detr-r50-e632da11.pth``, DAB-DETR's ``checkpoint.pth``) hold
``{"model": state_dict, ...}``. The maps:

* backbone ``backbone.0.body.*`` (torchvision ResNet names) -> ``backbone.*`` through
  the ResNet map of `densenets.checkpoint.convert.resnet`;
* transformer feed-forward ``linear1``/``linear2``/``activation`` -> ``ffn.*`` in the
  shared encoder (and in DETR's decoder), DETR's ``multihead_attn`` -> ``cross_attn``;
  DAB-DETR's decoder keeps its names;
* DAB-DETR's ``transformer.patterns.weight`` (``-3pat`` models) keeps its name;
* DAB-DETR's ``refpoint_embed.weight`` [Q, 4] -> ``anchor_xy`` [Q, 2] + ``anchor_wh``
  [Q, 2]; its copy of the box head inside the decoder is dropped (ours passes the head
  in at call time);
* class heads are indexed by COCO category id (91 rows, DETR's row 91 is no-object);
  the rows of the 80 used ids, in increasing id order, become our contiguous labels.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from . import register_converter
from .resnet import torchvision_resnet_to_densenets, unwrap_state_dict

__all__ = ["COCO_CATEGORY_IDS", "detr_to_densenets", "dab_detr_to_densenets"]

# The 80 category ids used by COCO detection (1..90 with gaps), in increasing order.
COCO_CATEGORY_IDS = tuple(i for i in range(1, 91) if i not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83))

_BACKBONE = "backbone.0.body."

_DETR_RULES = [
    (
        r"transformer\.(encoder|decoder)\.layers\.(\d+)\.(linear[12])\.(\w+)",
        r"transformer.\1.layers.\2.ffn.\3.\4",
    ),
    (
        r"transformer\.decoder\.layers\.(\d+)\.multihead_attn\.(.+)",
        r"transformer.decoder.layers.\1.cross_attn.\2",
    ),
    (r"transformer\.(encoder|decoder)\.layers\.\d+\.(self_attn|norm\d)\..+", None),
    (r"transformer\.decoder\.norm\.(weight|bias)", None),
    (r"(query_embed\.weight|input_proj\.(weight|bias)|bbox_embed\.layers\.\d\.(weight|bias))", None),
]

_DAB_RULES = [
    (
        r"transformer\.encoder\.layers\.(\d+)\.(linear[12]\.\w+|activation\.weight)",
        r"transformer.encoder.layers.\1.ffn.\2",
    ),
    (r"transformer\.encoder\.(layers\.\d+\.(self_attn|norm\d)\..+|query_scale\..+)", None),
    (r"transformer\.decoder\.(layers\.\d+|query_scale|ref_point_head|ref_anchor_head|norm)\..+", None),
    (r"(input_proj\.(weight|bias)|bbox_embed\.layers\.\d\.(weight|bias))", None),
    (r"transformer\.patterns\.weight", None),  # DAB-DETR-*-3pat: the P pattern embeddings
]


def _rename(state_dict: Mapping[str, Any], rules: list, skip: Sequence[str], source: str) -> dict:
    """Apply the first matching rule (None keeps the key); unknown keys are errors."""
    out = {}
    compiled = [(re.compile(p), r) for p, r in rules]
    for key, value in state_dict.items():
        if key.startswith(_BACKBONE) or any(key.startswith(s) for s in skip):
            continue
        for pattern, repl in compiled:
            if pattern.fullmatch(key):
                out[key if repl is None else pattern.sub(repl, key)] = value
                break
        else:
            raise KeyError(f"{source}: no rule maps checkpoint key {key!r}")
    out.update(torchvision_resnet_to_densenets(state_dict, _BACKBONE, "backbone."))
    return out


def _class_rows(weight: torch.Tensor, class_ids: Sequence[int], no_object: bool) -> torch.Tensor:
    rows = list(class_ids) + ([weight.shape[0] - 1] if no_object else [])
    if max(rows) >= weight.shape[0]:
        raise ValueError(f"class head has {weight.shape[0]} rows; cannot take class id {max(rows)}")
    return weight[rows].clone()


def detr_to_densenets(
    obj: Any, class_ids: Sequence[int] | None = COCO_CATEGORY_IDS
) -> dict[str, torch.Tensor]:
    """An official DETR checkpoint (C5 or DC5) -> a `DETR` state dict.

    Args:
        obj: the loaded file or its state dict.
        class_ids: rows of the class head to keep, in label order (the no-object row is
            kept last); None keeps all rows.
    """
    sd = unwrap_state_dict(obj)
    out = _rename(sd, _DETR_RULES, ("class_embed.",), "detr")
    for name in ("weight", "bias"):
        w = sd[f"class_embed.{name}"]
        out[f"class_embed.{name}"] = w if class_ids is None else _class_rows(w, class_ids, no_object=True)
    return out


def dab_detr_to_densenets(
    obj: Any, class_ids: Sequence[int] | None = COCO_CATEGORY_IDS
) -> dict[str, torch.Tensor]:
    """An official DAB-DETR checkpoint (C5 or DC5, with or without patterns) -> a `DABDETR` state dict.

    A ``-3pat`` checkpoint's ``transformer.patterns.weight`` [P, D] keeps its name; the
    model needs ``transformer.num_patterns: P``.

    Args:
        obj: the loaded file or its state dict.
        class_ids: rows of the (sigmoid) class head to keep, in label order; None keeps all.
    """
    sd = unwrap_state_dict(obj)
    skip = ("class_embed.", "refpoint_embed.", "transformer.decoder.bbox_embed.")
    out = _rename(sd, _DAB_RULES, skip, "dab-detr")
    for name in ("weight", "bias"):
        w = sd[f"class_embed.{name}"]
        out[f"class_embed.{name}"] = w if class_ids is None else _class_rows(w, class_ids, no_object=False)
    anchors = sd["refpoint_embed.weight"]
    out["anchor_xy"], out["anchor_wh"] = anchors[:, :2].clone(), anchors[:, 2:].clone()
    return out


@register_converter("detr")
def convert_detr(obj: Any) -> dict[str, torch.Tensor]:
    """Official DETR (facebookresearch/detr) COCO checkpoint -> `DETR` with 80 labels."""
    return detr_to_densenets(obj)


@register_converter("dab-detr")
def convert_dab_detr(obj: Any) -> dict[str, torch.Tensor]:
    """Official DAB-DETR (IDEA-Research/DAB-DETR) COCO checkpoint -> `DABDETR` with 80 labels."""
    return dab_detr_to_densenets(obj)
