"""Key maps from official Deformable DETR checkpoints to densenets' `DeformableDETR`.

Official files (fundamentalvision/Deformable-DETR, ``r50_deformable_detr*-checkpoint.pth``)
hold ``{"model": state_dict, ...}``. The maps, shared with the DINO converter:

* backbone ``backbone.0.body.*`` (torchvision ResNet names) -> ``backbone.*``;
* ``input_proj.{i}.0/1`` -> the neck's ``convs.{i}.conv/norm`` (1x1 projections of
  backbone levels) and ``extra_convs.{j}.conv/norm`` (3x3 stride-2 extra levels);
* transformer layers keep their names except the feed-forward (``linear1/2`` ->
  ``ffn.linear1/2``) and the decoder norms (official ``norm2`` follows the
  self-attention and ``norm1`` the cross-attention; ours are numbered in order of use);
* ``transformer.reference_points`` / ``enc_output`` / ``enc_output_norm`` / ``pos_trans``
  / ``pos_trans_norm`` move to the model;
* the decoder's references to the heads (``transformer.decoder.bbox_embed.*``,
  ``transformer.decoder.class_embed.*``) are dropped after checking they equal the heads;
* class heads are indexed by COCO category id (91 rows); the rows of the 80 used ids
  become our labels. The two-stage proposal head (the last ``class_embed``) ranks
  encoder pixels by its row 0 (id 0, no COCO class), so that row is kept as our column
  0 and ids 2..90 fill the rest.

Every key must match a rule: unmapped keys are listed in one `KeyError`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from . import register_converter
from .detr import COCO_CATEGORY_IDS
from .resnet import torchvision_resnet_to_densenets, unwrap_state_dict

__all__ = ["deformable_detr_to_densenets", "rename_keys", "neck_rules", "class_rows", "check_copies"]

BACKBONE = "backbone.0.body."
DROP = "<drop>"

# Rules shared by Deformable DETR and DINO: (pattern, replacement); DROP discards the key.
TRANSFORMER_RULES = [
    (r"transformer\.level_embed", r"transformer.level_embed"),
    (r"transformer\.(encoder|decoder)\.layers\.(\d+)\.(linear[12])\.(\w+)", r"transformer.\1.layers.\2.ffn.\3.\4"),
    (r"transformer\.encoder\.layers\.(\d+)\.(self_attn\..+|norm[12]\.\w+)", r"transformer.encoder.layers.\1.\2"),
    (r"transformer\.decoder\.layers\.(\d+)\.norm1\.(\w+)", r"transformer.decoder.layers.\1.norm2.\2"),
    (r"transformer\.decoder\.layers\.(\d+)\.norm2\.(\w+)", r"transformer.decoder.layers.\1.norm1.\2"),
    (r"transformer\.decoder\.layers\.(\d+)\.(self_attn\..+|cross_attn\..+|norm3\.\w+)", r"transformer.decoder.layers.\1.\2"),
    (r"transformer\.decoder\.(bbox_embed|class_embed)\..+", DROP),
    (r"bbox_embed\.(\d+)\.layers\.(\d)\.(weight|bias)", r"bbox_embed.\1.layers.\2.\3"),
]  # fmt: skip

_DDETR_RULES = [
    (r"transformer\.(reference_points|enc_output|enc_output_norm|pos_trans|pos_trans_norm)\.(weight|bias)", r"\1.\2"),
    (r"query_embed\.weight", r"query_embed.weight"),
]  # fmt: skip


def neck_rules(state_dict: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``input_proj.{i}`` -> ``neck.convs.{i}`` (1x1 kernels) or ``neck.extra_convs.{j}`` (3x3)."""
    rules = []
    extra = 0
    for i in range(len(state_dict)):
        weight = state_dict.get(f"input_proj.{i}.0.weight")
        if weight is None:
            break
        if weight.shape[-1] == 1:
            name = f"convs.{i}"
        else:
            name, extra = f"extra_convs.{extra}", extra + 1
        rules += [(rf"input_proj\.{i}\.0\.(weight|bias)", rf"neck.{name}.conv.\1")]
        rules += [(rf"input_proj\.{i}\.1\.(weight|bias)", rf"neck.{name}.norm.\1")]
    return rules


def rename_keys(state_dict: Mapping[str, Any], rules: list[tuple[str, str]], source: str) -> dict:
    """Apply the first matching rule to each non-backbone key and convert the ResNet.

    Raises:
        KeyError: listing every key that no rule maps.
    """
    compiled = [(re.compile(p), r) for p, r in rules]
    out, unmapped = {}, []
    for key, value in state_dict.items():
        if key.startswith(BACKBONE):
            continue
        for pattern, repl in compiled:
            if pattern.fullmatch(key):
                if repl != DROP:
                    out[pattern.sub(repl, key)] = value
                break
        else:
            unmapped.append(key)
    if unmapped:
        raise KeyError(f"{source}: {len(unmapped)} checkpoint keys have no rule: {', '.join(unmapped)}")
    out.update(torchvision_resnet_to_densenets(state_dict, BACKBONE, "backbone."))
    return out


def class_rows(weight: torch.Tensor, rows: Sequence[int]) -> torch.Tensor:
    """The given rows of a class head's weight or bias, in order."""
    if max(rows) >= weight.shape[0]:
        raise ValueError(f"class head has {weight.shape[0]} rows; cannot take row {max(rows)}")
    return weight[list(rows)].clone()


def check_copies(state_dict: Mapping[str, Any], copy_prefix: str, head_prefix: str, source: str) -> None:
    """The official decoder keeps references to the heads; they must equal the heads."""
    for key, value in state_dict.items():
        if key.startswith(copy_prefix):
            head = head_prefix + key[len(copy_prefix) :]
            if head not in state_dict or not torch.equal(state_dict[head], value):
                raise ValueError(f"{source}: {key} differs from {head}; the heads are not the decoder's")


def _num_decoder_layers(state_dict: Mapping[str, Any]) -> int:
    layers = {int(m[1]) for k in state_dict if (m := re.match(r"transformer\.decoder\.layers\.(\d+)\.", k))}
    return max(layers) + 1


def deformable_detr_to_densenets(
    obj: Any, class_ids: Sequence[int] | None = COCO_CATEGORY_IDS
) -> dict[str, torch.Tensor]:
    """An official Deformable DETR checkpoint (any variant) -> a `DeformableDETR` state dict.

    Args:
        obj: the loaded file or its state dict.
        class_ids: rows of the class heads to keep, in label order; None keeps all rows.
    """
    sd = unwrap_state_dict(obj)
    source = "deformable-detr"
    check_copies(sd, "transformer.decoder.bbox_embed.", "bbox_embed.", source)
    check_copies(sd, "transformer.decoder.class_embed.", "class_embed.", source)
    rules = TRANSFORMER_RULES + _DDETR_RULES + neck_rules(sd) + [(r"class_embed\.\d+\.(weight|bias)", DROP)]
    out = rename_keys(sd, rules, source)
    two_stage, last = "transformer.enc_output.weight" in sd, _num_decoder_layers(sd)
    if two_stage and torch.equal(sd[f"class_embed.{last}.weight"], sd["class_embed.0.weight"]):
        raise ValueError(
            f"{source}: two-stage without box refinement shares the proposal head with the decoder's; "
            "its proposal ranking (row 0) cannot be kept with COCO labels"
        )
    for key, value in sd.items():
        m = re.fullmatch(r"class_embed\.(\d+)\.(weight|bias)", key)
        if m is None:
            continue
        if class_ids is None:
            out[key] = value
        elif two_stage and int(m[1]) == last:
            out[key] = class_rows(value, [0, *class_ids[1:]])  # row 0 ranks the proposals
        else:
            out[key] = class_rows(value, class_ids)
    return out


@register_converter("deformable-detr")
def convert_deformable_detr(obj: Any) -> dict[str, torch.Tensor]:
    """Official Deformable DETR (fundamentalvision/Deformable-DETR) COCO checkpoint -> 80 labels."""
    return deformable_detr_to_densenets(obj)
