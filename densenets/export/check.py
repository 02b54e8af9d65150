"""`--check`: the exported file against the PyTorch model on a real photo.

Pass criteria (issue #21): detection: the same detections as a set (`match_detections`):
each exported detection paired with one of the model's with the same label, its box within
1e-3 relative (plus 1e-3 px absolute) tolerance, its score within 1e-4 (plus 1e-3 relative);
unpaired detections only at the top-k score cut-off (near-tied candidates) and only when
both sides hold the model's maximum number of detections (`max_detections`), and the
model's order but between near-tied scores;
segmentation: at least 99.9 % of pixels with the same class; super-resolution: no pixel
more than 1 grey level apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

__all__ = ["CheckError", "compare", "max_detections", "photo"]


class CheckError(AssertionError):
    """The exported file's outputs differ from the PyTorch model's."""


def photo(name: str = "astronaut") -> np.ndarray:
    """A real photo from scikit-image's bundled data, HWC uint8 RGB."""
    from skimage import data

    image = getattr(data, name)()
    return np.ascontiguousarray(image[..., :3]) if image.ndim == 3 else np.repeat(image[..., None], 3, axis=2)


def max_detections(model: torch.nn.Module) -> int | None:
    """The number of detections at which the model's postprocessing cuts a ranked list of
    candidates: Faster R-CNN's `detections_per_image` (after NMS), the `num_select` best
    (query, class) pairs of DAB-DETR, Deformable DETR and DINO. None where no candidate
    is dropped by rank: DETR (every query is one detection), segmentation, SR."""
    from densenets.modeling.detection import DABDETR, DINO, DeformableDETR, FasterRCNN

    if isinstance(model, FasterRCNN):
        return model.roi_heads.box_predictor.detections_per_image
    if isinstance(model, (DABDETR, DeformableDETR, DINO)):
        return model.num_select
    return None


def compare(
    task: str,
    reference: dict[str, Any],
    exported: Sequence[torch.Tensor],
    max_detections: int | None = None,
) -> str:
    """Compare one prediction of the model (contract dict) with the file's raw outputs.

    Args:
        task: "detection", "segmentation" or "super_resolution".
        reference: the model's prediction for the image (docs/contracts.md).
        exported: the file's outputs, in `OUTPUT_NAMES[task]` order.
        max_detections: detection: where the model cuts its ranked candidates (see
            `max_detections()`); when both sides hold exactly this many, detections at the
            lowest score may differ (near-tied candidates around the cut-off). None: no
            cut-off, every detection must be paired.

    Returns:
        A one-line summary of what was compared.

    Raises:
        CheckError: with a one-line reason.
    """
    if task == "detection":
        return _compare_detections(reference["instances"], exported, max_detections)
    if task == "segmentation":
        ref = reference["sem_seg"]
        ref = ref.argmax(0) if ref.ndim == 3 else ref
        out = exported[0]
        if tuple(out.shape) != tuple(ref.shape):
            raise CheckError(f"class map is {tuple(out.shape)}, the model's {tuple(ref.shape)}")
        equal = (out.long() == ref.long()).float().mean().item()
        if equal < 0.999:
            raise CheckError(f"only {100 * equal:.3f} % of pixels have the model's class (need 99.9 %)")
        return f"class map {tuple(out.shape)}: {100 * equal:.4f} % of pixels equal"
    ref, out = reference["sr"], exported[0]
    if tuple(out.shape) != tuple(ref.shape):
        raise CheckError(f"SR image is {tuple(out.shape)}, the model's {tuple(ref.shape)}")
    diff = (out.int() - ref.int()).abs().max().item()
    if diff > 1:
        raise CheckError(f"SR image differs by up to {diff} grey levels (at most 1 allowed)")
    return f"SR image {tuple(out.shape)}: max difference {diff} grey level(s)"


def _compare_detections(
    ref: dict[str, torch.Tensor], exported: Sequence[torch.Tensor], cap: int | None
) -> str:
    """The same detections as a set: each exported detection paired one-to-one with a
    model's detection of the same label, box and score (within tolerance). Unpaired ones
    are allowed only when both sides hold `cap` detections (the output was cut at the
    model's maximum) and only at that cut-off's score, where a near-tie decides which
    candidate is kept; paired ones must come in the model's order except between near-tied
    scores."""
    ours, theirs = _detections(*exported), _detections(*(ref[k] for k in ("boxes", "scores", "labels")))
    scores, rs = ours[1], theirs[1]
    if not len(rs) and not len(scores):
        return "0 detections on both sides"
    pairs = match_detections(*ours, *theirs)  # (M, 2): exported, model
    unpaired = [_unpaired(len(scores), pairs[:, 0]), _unpaired(len(rs), pairs[:, 1])]
    if len(scores) != len(rs):
        raise CheckError(
            f"{len(scores)} detections, the model has {len(rs)}{_first_unpaired(unpaired, ours, theirs)}"
        )
    cutoff = rs.min()
    truncated = cap is not None and len(rs) == cap
    for exported, s, loose in ((False, rs, unpaired[1]), (True, scores, unpaired[0])):
        away = loose & ((s - cutoff).abs() > _score_tol(cutoff)) if truncated else loose
        if away.any():
            i = int(away.nonzero()[0, 0])
            where = (
                f"{int(away.sum())} away from the score cut-off {cutoff:.6g}"
                if truncated
                else _no_cutoff(len(rs), cap)
            )
            raise CheckError(
                f"{int(loose.sum())} of {len(rs)} detections differ from the model's "
                f"({where}; e.g. {_describe(i, exported, ours, theirs)}"
                f"{_same_box_note(i, exported, ours, theirs)}); "
                f"same detection = same label, box within {BOX_RTOL:g} relative, score within "
                f"{SCORE_ATOL:g} + {SCORE_RTOL:g} relative"
            )
    swapped = _check_order(pairs, rs)
    notes = [f"{swapped} pairs of near-tied scores in another order"] if swapped else []
    if unpaired[0].any():
        notes.append(
            f"{int(unpaired[0].sum())} at the score cut-off {cutoff:.6g} of the {cap} kept differ: tied candidates"
        )
    note = f" ({'; '.join(notes)})" if notes else ""
    return f"{len(rs)} detections: same labels, boxes within {BOX_RTOL:g} relative{note}"


def _detections(boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Detached CPU float32 boxes (Tensor[D, 4]) and scores (Tensor[D]), int64 labels (Tensor[D])."""
    return boxes.detach().cpu().float(), scores.detach().cpu().float(), labels.detach().cpu().long()


def _unpaired(n: int, paired: torch.Tensor) -> torch.Tensor:
    """Tensor[n] bool: True where index is not in `paired`."""
    mask = torch.ones(n, dtype=torch.bool)
    mask[paired] = False
    return mask


def _no_cutoff(n: int, cap: int | None) -> str:
    """Why no unpaired detection is allowed: the output was not cut at a maximum."""
    if cap is None:
        return "the model keeps every candidate, so no near-tie at a cut-off can swap one"
    return f"{n} detections, not the model's maximum of {cap}, so nothing was cut off"


def _first_unpaired(unpaired: list[torch.Tensor], ours: tuple, theirs: tuple) -> str:
    """`: e.g. <the first detection without a partner>`, the model's first, or ''."""
    for exported, loose in ((False, unpaired[1]), (True, unpaired[0])):
        if loose.any():
            i = int(loose.nonzero()[0, 0])
            note = _same_box_note(i, exported, ours, theirs)
            return f": e.g. {_describe(i, exported, ours, theirs)} has no partner{note}"
    return ""


def _describe(i: int, exported: bool, ours: tuple, theirs: tuple) -> str:
    """`the exported #i (label L, score S, box [x1, y1, x2, y2])`."""
    b, s, lab = ours if exported else theirs
    box = ", ".join(f"{float(v):.1f}" for v in b[i])
    return f"the {'exported' if exported else 'model'}'s #{i} (label {int(lab[i])}, score {float(s[i]):.6g}, box [{box}])"


def _same_box_note(i: int, exported: bool, ours: tuple, theirs: tuple) -> str:
    """Where the other side has detection i's label and box with another score: say so."""
    (b, s, lab), (ob, os_, ol) = (ours, theirs) if exported else (theirs, ours)
    near = (ol == lab[i]) & ((ob - b[i]).abs() <= BOX_ATOL + BOX_RTOL * b[i].abs()).all(-1)
    if not near.any():
        return ", no detection of that label and box on the other side"
    j = int(((os_ - s[i]).abs() + (~near) * 1e9).argmin())
    return f"; the other side has that label and box with score {float(os_[j]):.6g}"


BOX_RTOL, BOX_ATOL = 1e-3, 1e-3  # boxes: relative, and absolute in pixels (for 0 coordinates)
SCORE_RTOL, SCORE_ATOL = 1e-3, 1e-4  # scores: what two runtimes may differ by; ties within it


def _score_tol(s: torch.Tensor) -> torch.Tensor:
    return SCORE_ATOL + SCORE_RTOL * s.abs()


def match_detections(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    labels: torch.Tensor,
    rb: torch.Tensor,
    rs: torch.Tensor,
    rl: torch.Tensor,
) -> torch.Tensor:
    """A largest one-to-one pairing of exported and reference detections that are the same
    (same label, boxes within `BOX_RTOL`/`BOX_ATOL`, scores within the score tolerance).

    Args:
        boxes, scores, labels: exported Tensor[D, 4] xyxy, Tensor[D], Tensor[D].
        rb, rs, rl: the reference's Tensor[R, 4], Tensor[R], Tensor[R].

    Returns:
        Tensor[M, 2] int64 (exported index, reference index), by exported index; a
        maximum bipartite matching (Hungarian), so near-duplicate boxes cannot take each
        other's partner as a greedy match in order can.
    """
    from scipy.optimize import linear_sum_assignment

    if not len(boxes) or not len(rb):
        return torch.zeros(0, 2, dtype=torch.long)
    box_err = ((boxes[:, None] - rb[None]).abs() / (BOX_ATOL + BOX_RTOL * rb.abs()[None])).amax(-1)
    same = (
        (labels[:, None] == rl[None])
        & (box_err <= 1)
        & ((scores[:, None] - rs[None]).abs() <= _score_tol(rs)[None])
    )
    # Pairs that are not the same cost more than all same pairs together (each costs <= 1).
    cost = torch.where(same, box_err, torch.full_like(box_err, 2.0 * (len(boxes) + 1)))
    rows, cols = linear_sum_assignment(cost.double().numpy())
    pairs = torch.as_tensor(np.stack([rows, cols], 1), dtype=torch.long).reshape(-1, 2)
    return pairs[same[pairs[:, 0], pairs[:, 1]]]


def _check_order(pairs: torch.Tensor, rs: torch.Tensor) -> int:
    """Paired detections must come in the model's order but for near-tied scores.

    Returns:
        How many pairs of detections are in another order (all near-tied).
    """
    ref_index = pairs[pairs[:, 0].argsort(), 1]  # model's index of each exported detection, in order
    later = ref_index[None, :] < ref_index[:, None]  # (i, j): exported i before j, model j before i
    later = later.triu(1)
    s = rs[ref_index]
    apart = (s[:, None] - s[None, :]).abs() > _score_tol(torch.maximum(s[:, None], s[None, :]))
    bad = (later & apart).nonzero()
    if len(bad):
        i, j = (int(k) for k in bad[0])
        raise CheckError(
            f"detections in another order: the file puts the model's #{int(ref_index[i])} "
            f"(score {float(s[i]):.6g}) before its #{int(ref_index[j])} (score {float(s[j]):.6g}), "
            "scores not tied"
        )
    return int(later.sum())
