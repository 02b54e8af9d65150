"""Box refinement and top-k selection shared by the DETR family (DAB-DETR, Deformable DETR, DINO).

Refining detectors predict a box as a delta in inverse-sigmoid space on top of a
reference: ``box = sigmoid(delta + inverse_sigmoid(reference))`` (Deformable DETR,
Zhu et al., 2021, Section A.4; DAB-DETR; DINO). Each official code base clamps the
inverse sigmoid at its own `eps` (DAB-DETR and DINO 1e-3, Deformable DETR 1e-5), which
matters whenever a box touches the image border, so every caller passes its own.
Boxes are normalised (cx, cy, w, h); points are (cx, cy).
"""

from __future__ import annotations

import torch

__all__ = ["inverse_sigmoid", "refine_boxes", "topk_detections"]


def inverse_sigmoid(x: torch.Tensor, eps: float) -> torch.Tensor:
    """log(x / (1 - x)) with both terms clamped to at least `eps`.

    Args:
        x (Tensor[...]): values, clamped to [0, 1] first.
        eps: the clamp; each DETR variant has its own.
    """
    x = x.clamp(0, 1)
    return torch.log(x.clamp(min=eps) / (1 - x).clamp(min=eps))


def refine_boxes(delta: torch.Tensor, reference: torch.Tensor, eps: float) -> torch.Tensor:
    """Apply predicted deltas to reference boxes or points.

    Args:
        delta (Tensor[..., 4]): the box head's output, inverse-sigmoid space.
        reference (Tensor[..., 4] or Tensor[..., 2]): boxes cxcywh, or points cxcy
            (then only the centre moves and w, h come from the delta alone, as in
            Deformable DETR's first refinement of its 2-d reference points).
        eps: the inverse-sigmoid clamp.

    Returns:
        Tensor[..., 4]: refined boxes, cxcywh in (0, 1).
    """
    if reference.shape[-1] == 2:
        return torch.cat([delta[..., :2] + inverse_sigmoid(reference, eps), delta[..., 2:]], -1).sigmoid()
    return (delta + inverse_sigmoid(reference, eps)).sigmoid()


def topk_detections(
    logits: torch.Tensor, boxes: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The `k` best (query, class) pairs of each image by sigmoid score, without NMS.

    Args:
        logits (Tensor[B, Q, K]): class logits.
        boxes (Tensor[B, Q, 4]): boxes, any format.
        k: detections kept per image (at most Q*K).

    Returns:
        scores (Tensor[B, N]), labels (Tensor[B, N] int64), boxes (Tensor[B, N, 4]),
        N = min(k, Q*K), sorted by score.
    """
    _, q, num_classes = logits.shape
    scores, idx = logits.sigmoid().flatten(1).topk(min(k, q * num_classes), dim=1)
    query = torch.div(idx, num_classes, rounding_mode="floor")
    return scores, idx % num_classes, boxes.gather(1, query.unsqueeze(-1).expand(-1, -1, 4))
