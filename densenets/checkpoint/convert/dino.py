"""Key maps from official DINO checkpoints (IDEA-Research/DINO, R50 4-scale / 5-scale) to `DINO`.

Beyond the maps shared with Deformable DETR (`deformable_detr.py`: backbone, neck,
encoder and decoder layers):

* ``transformer.tgt_embed`` / ``enc_output`` / ``enc_output_norm`` move to the model;
  ``transformer.enc_out_class_embed`` / ``enc_out_bbox_embed`` become
  ``enc_class_embed`` / ``enc_bbox_embed``; the decoder's ``ref_point_head`` and its
  output ``norm`` keep their names;
* the class and box heads are shared by all decoder layers (``class_embed.{i}``
  repeats one tensor); the decoder's references to them are dropped after checking;
* ``label_enc`` (the denoising label embedding, part of the checkpoint) becomes
  ``denoising.label_enc``; like the class heads it is indexed by COCO category id
  (92 rows) and keeps the rows of the 80 used ids.

Checkpoints of DINO without two-stage query selection (``transformer.refpoint_embed``)
are not DINO's published models and are rejected by the unmapped-key check.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import torch

from . import register_converter
from .deformable_detr import DROP, TRANSFORMER_RULES, check_copies, class_rows, neck_rules, rename_keys
from .detr import COCO_CATEGORY_IDS
from .resnet import unwrap_state_dict

__all__ = ["dino_to_densenets"]

_DINO_RULES = [
    (r"transformer\.(tgt_embed|enc_output|enc_output_norm)\.(weight|bias)", r"\1.\2"),
    (r"transformer\.enc_out_bbox_embed\.layers\.(\d)\.(weight|bias)", r"enc_bbox_embed.layers.\1.\2"),
    (r"transformer\.decoder\.(ref_point_head\.layers\.\d|norm)\.(weight|bias)", r"transformer.decoder.\1.\2"),
]

# Class-indexed tensors: (official key pattern, our key).
_CLASS_INDEXED = [
    (r"class_embed\.(\d+)\.(weight|bias)", r"class_embed.\1.\2"),
    (r"transformer\.enc_out_class_embed\.(weight|bias)", r"enc_class_embed.\1"),
    (r"label_enc\.weight", r"denoising.label_enc.weight"),
]


def dino_to_densenets(
    obj: Any, class_ids: Sequence[int] | None = COCO_CATEGORY_IDS
) -> dict[str, torch.Tensor]:
    """An official DINO checkpoint -> a `DINO` state dict.

    Args:
        obj: the loaded file or its state dict.
        class_ids: rows of the class heads and of the label embedding to keep, in label
            order; None keeps all rows.
    """
    sd = unwrap_state_dict(obj)
    source = "dino"
    check_copies(sd, "transformer.decoder.bbox_embed.", "bbox_embed.", source)
    check_copies(sd, "transformer.decoder.class_embed.", "class_embed.", source)
    for key, value in sd.items():  # one head shared by all decoder layers
        m = re.fullmatch(r"(class_embed|bbox_embed)\.(\d+)\.(.+)", key)
        if m and not torch.equal(value, sd[f"{m[1]}.0.{m[3]}"]):
            raise ValueError(
                f"{source}: {key} differs from {m[1]}.0.{m[3]}; only shared decoder heads are supported"
            )
    class_rules = [(p, DROP) for p, _ in _CLASS_INDEXED]
    out = rename_keys(sd, TRANSFORMER_RULES + _DINO_RULES + neck_rules(sd) + class_rules, source)
    for key, value in sd.items():
        for pattern, repl in _CLASS_INDEXED:
            if re.fullmatch(pattern, key):
                out[re.sub(pattern, repl, key)] = value if class_ids is None else class_rows(value, class_ids)
    return out


@register_converter("dino")
def convert_dino(obj: Any) -> dict[str, torch.Tensor]:
    """Official DINO (IDEA-Research/DINO) COCO checkpoint -> `DINO` with 80 labels."""
    return dino_to_densenets(obj)
