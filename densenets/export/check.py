"""`--check`: the exported file against the PyTorch model on a real photo.

Pass criteria (issue #21): detection: the same number of detections, the same labels,
boxes within 1e-3 relative (plus 1e-3 px absolute) tolerance, scores within 1e-4;
segmentation: at least 99.9 % of pixels with the same class; super-resolution: no pixel
more than 1 grey level apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

__all__ = ["CheckError", "compare", "photo"]


class CheckError(AssertionError):
    """The exported file's outputs differ from the PyTorch model's."""


def photo(name: str = "astronaut") -> np.ndarray:
    """A real photo from scikit-image's bundled data, HWC uint8 RGB."""
    from skimage import data

    image = getattr(data, name)()
    return np.ascontiguousarray(image[..., :3]) if image.ndim == 3 else np.repeat(image[..., None], 3, axis=2)


def compare(task: str, reference: dict[str, Any], exported: Sequence[torch.Tensor]) -> str:
    """Compare one prediction of the model (contract dict) with the file's raw outputs.

    Returns:
        A one-line summary of what was compared.

    Raises:
        CheckError: with a one-line reason.
    """
    if task == "detection":
        return _compare_detections(reference["instances"], exported)
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


def _compare_detections(ref: dict[str, torch.Tensor], exported: Sequence[torch.Tensor]) -> str:
    boxes, scores, labels = (t.detach().cpu() for t in exported)
    rb, rs, rl = (ref[k].detach().cpu() for k in ("boxes", "scores", "labels"))
    if len(boxes) != len(rb):
        raise CheckError(f"{len(boxes)} detections, the model has {len(rb)}")
    order = _match(boxes, scores, labels.long(), rb.to(boxes.dtype), rs.to(scores.dtype), rl.long())
    if order is None:
        close = torch.isclose(boxes, rb.to(boxes.dtype), rtol=1e-3, atol=1e-3).all(1) & (
            labels.long() == rl.long()
        )
        raise CheckError(
            f"{int((~close).sum())} of {len(rb)} detections differ from the model's (label, or a box "
            "beyond 1e-3 relative tolerance)"
        )
    swapped = int((order != torch.arange(len(order))).sum())
    note = f" ({swapped} swapped between equal scores)" if swapped else ""
    return f"{len(rb)} detections: same labels, boxes within 1e-3 relative{note}"


def _match(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    labels: torch.Tensor,
    rb: torch.Tensor,
    rs: torch.Tensor,
    rl: torch.Tensor,
) -> torch.Tensor | None:
    """For each exported detection, the model's detection it equals, in order where
    possible; detections whose scores tie (within 1e-5) may come in either order, as
    top-k and sorting in two runtimes break such ties differently. None when some
    detection has no partner."""
    same = (
        (labels[:, None] == rl[None])
        & ((scores[:, None] - rs[None]).abs() <= 1e-5 + 1e-3 * rs.abs()[None])
        & torch.isclose(boxes[:, None], rb[None], rtol=1e-3, atol=1e-3).all(-1)
    )  # (D, D)
    order, used = [], torch.zeros(len(rb), dtype=torch.bool)
    for i in range(len(boxes)):
        candidates = (same[i] & ~used).nonzero()[:, 0]
        if not len(candidates):
            return None
        j = i if bool(same[i, i]) and not bool(used[i]) else int(candidates[0])
        used[j] = True
        order.append(j)
    return torch.tensor(order, dtype=torch.long)
