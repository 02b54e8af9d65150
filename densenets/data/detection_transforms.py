"""Albumentations pipelines for detection: shortest-edge resize, flip, colour jitter.

Boxes (and every per-box field: labels, iscrowd, ...) move with the image.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import albumentations as A
import cv2
import numpy as np

from densenets.config import TRANSFORMS

from .seeding import seed_albumentations

__all__ = ["DetectionTransform", "ResizeShortestEdge", "shortest_edge_size"]


def shortest_edge_size(h: int, w: int, short_edge: int, max_size: int) -> tuple[int, int]:
    """Output (h, w) with the short side `short_edge`, scaled down so the long side ≤ `max_size`."""
    scale = short_edge / min(h, w)
    if max(h, w) * scale > max_size:
        scale = max_size / max(h, w)
    # A side never rounds to 0 (a 1 x 3000 strip stays one row high).
    return max(1, int(h * scale + 0.5)), max(1, int(w * scale + 0.5))


class ResizeShortestEdge(A.DualTransform):
    """Resize keeping the aspect ratio: short side to `short_edge`, long side at most `max_size`.

    Args:
        short_edge: one size, or several for multi-scale training.
        max_size: cap on the long side.
        sample_style: "choice" picks one of `short_edge`; "range" draws an integer in
            ``[short_edge[0], short_edge[1]]``.
        interpolation: OpenCV flag (bilinear).
        p: probability of applying.
    """

    def __init__(
        self,
        short_edge: int | Sequence[int] = 800,
        max_size: int = 1333,
        sample_style: str = "choice",
        interpolation: int = cv2.INTER_LINEAR,
        p: float = 1.0,
    ) -> None:
        super().__init__(p=p)
        self.short_edge = [short_edge] if isinstance(short_edge, int) else [int(s) for s in short_edge]
        if sample_style not in ("choice", "range"):
            raise ValueError(
                f"ResizeShortestEdge: sample_style must be choice or range, got {sample_style!r}"
            )
        if sample_style == "range" and len(self.short_edge) != 2:
            raise ValueError(f"ResizeShortestEdge: range needs [min, max], got {self.short_edge}")
        self.max_size = max_size
        self.sample_style = sample_style
        self.interpolation = interpolation

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        h, w = params["shape"][:2]
        if self.sample_style == "range":
            short = self.py_random.randint(self.short_edge[0], self.short_edge[1])
        else:
            short = self.py_random.choice(self.short_edge)
        return {"out_size": shortest_edge_size(h, w, short, self.max_size)}

    def apply(self, img: np.ndarray, out_size: tuple[int, int], **params: Any) -> np.ndarray:
        if img.shape[:2] == out_size:
            return img
        return cv2.resize(img, (out_size[1], out_size[0]), interpolation=self.interpolation)

    def apply_to_mask(self, mask: np.ndarray, out_size: tuple[int, int], **params: Any) -> np.ndarray:
        return cv2.resize(mask, (out_size[1], out_size[0]), interpolation=cv2.INTER_NEAREST)

    def apply_to_bboxes(self, bboxes: np.ndarray, **params: Any) -> np.ndarray:
        return bboxes  # albumentations keeps boxes normalised: a resize leaves them unchanged

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("short_edge", "max_size", "sample_style", "interpolation")


@TRANSFORMS.register()
class DetectionTransform:
    """Detection augmentation on a numpy item (``image`` HWC uint8 RGB, ``instances``).

    Args:
        min_size: short side after resizing; a list for multi-scale training.
        max_size: cap on the long side.
        sample_style: "choice" (one of `min_size`) or "range" (``[min, max]``).
        flip_prob: probability of a horizontal flip (0.5 in training, 0 at test time).
        color_jitter: None, or albumentations ``ColorJitter`` arguments, e.g.
            ``{brightness: 0.2, contrast: 0.2, saturation: 0.2, hue: 0.0, p: 0.8}``.
        seed: seed of the pipeline's random generator (None: fresh entropy).
    """

    def __init__(
        self,
        min_size: int | Sequence[int] = 800,
        max_size: int = 1333,
        sample_style: str = "choice",
        flip_prob: float = 0.0,
        color_jitter: dict | None = None,
        seed: int | None = None,
    ) -> None:
        steps: list[A.BasicTransform] = [ResizeShortestEdge(min_size, max_size, sample_style)]
        if flip_prob > 0:
            steps.append(A.HorizontalFlip(p=flip_prob))
        if color_jitter:
            steps.append(A.ColorJitter(**color_jitter))
        self.pipeline = A.Compose(
            steps, bbox_params=A.BboxParams(format="pascal_voc", label_fields=["box_index"]), seed=seed
        )

    def set_random_seed(self, seed: int) -> None:
        """Make the next calls reproducible (the training loader seeds each item)."""
        seed_albumentations(self.pipeline, seed)

    def __call__(self, item: dict[str, Any]) -> dict[str, Any]:
        """Transform ``item["image"]`` and every array in ``item["instances"]`` (per box)."""
        instances = item.get("instances") or {}
        boxes = np.asarray(instances.get("boxes", np.zeros((0, 4))), dtype=np.float32).reshape(-1, 4)
        out = self.pipeline(image=item["image"], bboxes=boxes, box_index=np.arange(len(boxes)))
        item["image"] = out["image"]
        if "instances" in item:
            index = np.asarray(out["box_index"], dtype=np.int64)
            new = {k: np.asarray(v)[index] for k, v in instances.items() if k != "boxes"}
            new["boxes"] = np.asarray(out["bboxes"], dtype=np.float32).reshape(-1, 4)
            item["instances"] = new
        return item

    def __repr__(self) -> str:
        return f"DetectionTransform({self.pipeline.transforms})"
