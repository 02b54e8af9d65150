"""DETR's training augmentation (Carion et al., 2020): flip, multi-scale resize, random crop.

With probability 1 - `crop_prob` the image is resized so that its short side is one of
`scales` (long side at most `max_size`); otherwise it is first resized to a short side
in `crop_resize`, cropped to a random h x w with h, w in `crop_size` (clamped to the
image), and then resized as above. Boxes are clipped to the crop; boxes left without
area are dropped with their labels (and every other per-box field).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import albumentations as A
import numpy as np
from albumentations.augmentations.crops.transforms import BaseCrop

from densenets.config import TRANSFORMS

from .detection_transforms import DetectionTransform, ResizeShortestEdge

__all__ = ["DETRTransform", "RandomSizeCrop", "DETR_SCALES"]

DETR_SCALES = tuple(range(480, 801, 32))  # 480, 512, ..., 800


class RandomSizeCrop(BaseCrop):
    """Crop a random h x w window, h and w drawn uniformly in [min_size, min(max_size, side)].

    Args:
        min_size: smallest crop side (the image side if that is smaller).
        max_size: largest crop side.
        p: probability of applying.
    """

    def __init__(self, min_size: int = 384, max_size: int = 600, p: float = 1.0) -> None:
        super().__init__(p=p)
        if not 0 < min_size <= max_size:
            raise ValueError(f"RandomSizeCrop: need 0 < min_size <= max_size, got {min_size}, {max_size}")
        self.min_size = min_size
        self.max_size = max_size

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        h, w = params["shape"][:2]
        ch = self.py_random.randint(min(self.min_size, h), min(self.max_size, h))
        cw = self.py_random.randint(min(self.min_size, w), min(self.max_size, w))
        y0 = self.py_random.randint(0, h - ch)
        x0 = self.py_random.randint(0, w - cw)
        return {"crop_coords": (x0, y0, x0 + cw, y0 + ch)}

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("min_size", "max_size")


@TRANSFORMS.register()
class DETRTransform(DetectionTransform):
    """DETR's train-time pipeline on a numpy item (``image`` HWC uint8 RGB, ``instances``).

    At test time use ``DetectionTransform(min_size=800, max_size=1333)``; this class with
    ``scales=[800], crop_prob=0, flip_prob=0`` is the same.

    Args:
        scales: short sides to choose from.
        max_size: cap on the long side.
        crop_prob: probability of the resize-crop-resize branch.
        crop_resize: short sides before cropping.
        crop_size: (min, max) side of the random crop.
        flip_prob: probability of a horizontal flip.
        seed: seed of the pipeline's random generator (None: fresh entropy).
    """

    def __init__(
        self,
        scales: Sequence[int] = DETR_SCALES,
        max_size: int = 1333,
        crop_prob: float = 0.5,
        crop_resize: Sequence[int] = (400, 500, 600),
        crop_size: Sequence[int] = (384, 600),
        flip_prob: float = 0.5,
        seed: int | None = None,
    ) -> None:
        if not 0 <= crop_prob <= 1:
            raise ValueError(f"DETRTransform: crop_prob must be in [0, 1], got {crop_prob}")
        resize = ResizeShortestEdge(list(scales), max_size)
        steps: list[A.BasicTransform] = [A.HorizontalFlip(p=flip_prob)] if flip_prob > 0 else []
        if crop_prob > 0:
            crop = A.Sequential(
                [
                    # DETR does not cap the long side before the crop.
                    ResizeShortestEdge(list(crop_resize), max_size=10**6),
                    RandomSizeCrop(*crop_size),
                    ResizeShortestEdge(list(scales), max_size),
                ]
            )
            resize.p, crop.p = 1 - crop_prob, crop_prob  # OneOf draws with these weights
            steps.append(A.OneOf([resize, crop], p=1.0))
        else:
            steps.append(resize)
        self.pipeline = A.Compose(
            steps,
            bbox_params=A.BboxParams(
                format="pascal_voc", label_fields=["box_index"], clip=True, min_area=1e-6
            ),
            seed=seed,
        )

    def __call__(self, item: dict[str, Any]) -> dict[str, Any]:
        item = super().__call__(item)
        inst = item.get("instances")
        if inst is not None:  # drop boxes the crop reduced to a line
            boxes = inst["boxes"]
            keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
            if not keep.all():
                item["instances"] = {k: np.asarray(v)[keep] for k, v in inst.items()}
        return item
