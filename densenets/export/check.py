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
    if not torch.equal(labels.long(), rl.long()):
        n = int((labels.long() != rl.long()).sum())
        raise CheckError(f"{n} of {len(rl)} detections have another label than the model's")
    if len(rb) and not torch.allclose(boxes, rb.to(boxes.dtype), rtol=1e-3, atol=1e-3):
        worst = ((boxes - rb).abs() / rb.abs().clamp(min=1)).max().item()
        raise CheckError(f"boxes differ from the model's by up to {worst:.2e} (relative; 1e-3 allowed)")
    if len(rs) and not torch.allclose(scores, rs.to(scores.dtype), rtol=1e-3, atol=1e-4):
        raise CheckError(f"scores differ from the model's by up to {(scores - rs).abs().max().item():.2e}")
    return f"{len(rb)} detections: same labels, boxes within 1e-3 relative"
