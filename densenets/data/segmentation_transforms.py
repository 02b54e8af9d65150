"""Augmentation for semantic segmentation, on numpy items, with Albumentations.

Training (the DeepLab / Cityscapes recipe): optional resize to a base scale, random
rescale by a factor in [0.5, 2.0], padding to the crop size (image 0, label ignore), a
random crop in which no single category covers more than `cat_max_ratio` of the
labelled pixels (10 tries), horizontal flip and photometric distortion (brightness ±32,
contrast and saturation ×[0.5, 1.5], hue ±18 OpenCV units, each with probability 0.5).

Items are dicts with `image` np.ndarray[H, W, 3] uint8 RGB and `sem_seg`
np.ndarray[H, W] (uint8 train ids, 255 = ignore); other keys pass through.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import albumentations as A
import cv2
import numpy as np

from densenets.config import TRANSFORMS

from .seeding import derive_seed, seed_albumentations

__all__ = ["SemSegTrainTransform", "SemSegTestTransform", "cat_max_ratio_crop"]


def _pair(value: int | Sequence[int], key: str) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    if len(value) != 2:
        raise ValueError(f"{key}: expected [height, width], got {list(value)}")
    return int(value[0]), int(value[1])


def cat_max_ratio_crop(
    label: np.ndarray,
    crop_size: tuple[int, int],
    cat_max_ratio: float,
    rng: np.random.Generator,
    ignore_index: int = 255,
    max_tries: int = 10,
) -> tuple[int, int]:
    """Top-left (y, x) of a random crop in which the most frequent category covers less
    than `cat_max_ratio` of the labelled pixels and more than one category appears; after
    `max_tries` failures the last candidate is used. `cat_max_ratio >= 1` takes the first.

    Args:
        label: np.ndarray[H, W] with H, W >= crop_size.
        crop_size: (h, w).
    """
    ch, cw = crop_size
    h, w = label.shape
    for _ in range(max_tries):
        y = int(rng.integers(0, h - ch + 1))
        x = int(rng.integers(0, w - cw + 1))
        if cat_max_ratio >= 1.0:
            break
        crop = label[y : y + ch, x : x + cw]
        counts = np.bincount(crop[crop != ignore_index].ravel())
        counts = counts[counts > 0]
        if len(counts) > 1 and counts.max() / counts.sum() < cat_max_ratio:
            break
    return y, x


@TRANSFORMS.register()
class SemSegTrainTransform:
    """Random rescale, pad, category-capped crop, flip and photometric distortion.

    Args:
        crop_size: (h, w) of the output.
        scale: optional (h, w) box the image is first resized into (aspect kept);
            None keeps the file's size (Cityscapes: 1024 x 2048).
        ratio_range: random rescale factor range.
        cat_max_ratio: the largest fraction one category may cover in the crop.
        flip_prob: probability of a horizontal flip.
        photometric: apply photometric distortion.
        ignore_index: label of padded pixels.
    """

    def __init__(
        self,
        crop_size: int | Sequence[int] = (512, 1024),
        scale: Sequence[int] | None = None,
        ratio_range: Sequence[float] = (0.5, 2.0),
        cat_max_ratio: float = 0.75,
        flip_prob: float = 0.5,
        photometric: bool = True,
        ignore_index: int = 255,
    ) -> None:
        self.crop_size = _pair(crop_size, "crop_size")
        self.cat_max_ratio = cat_max_ratio
        self.ignore_index = ignore_index
        lo, hi = ratio_range
        if not 0 < lo <= hi:
            raise ValueError(f"ratio_range: expected 0 < low <= high, got {list(ratio_range)}")
        resize = [A.LongestMaxSize(max_size_hw=_pair(scale, "scale"))] if scale is not None else []
        self.rescale = A.Compose(
            resize
            + [
                A.RandomScale(scale_limit=(lo - 1.0, hi - 1.0), p=1.0),
                A.PadIfNeeded(
                    *self.crop_size,
                    position="top_left",
                    border_mode=cv2.BORDER_CONSTANT,
                    fill=0,
                    fill_mask=ignore_index,
                ),
            ]
        )
        photo = []
        if photometric:
            photo = [
                A.RandomBrightnessContrast(brightness_limit=32 / 255, contrast_limit=0.0, p=0.5),
                A.RandomBrightnessContrast(brightness_limit=0.0, contrast_limit=0.5, p=0.5),
                A.ColorJitter(brightness=(1, 1), contrast=(1, 1), saturation=(0.5, 1.5), hue=(0, 0), p=0.5),
                # OpenCV's 8-bit hue spans 180 units: ±18 units = ±0.1 of the hue circle.
                A.ColorJitter(brightness=(1, 1), contrast=(1, 1), saturation=(1, 1), hue=(-0.1, 0.1), p=0.5),
            ]
        self.flip_photo = A.Compose([A.HorizontalFlip(p=flip_prob), *photo])
        self.rng = np.random.default_rng()

    def set_random_seed(self, seed: int) -> None:
        """Make the next calls reproducible (the loaders seed each item)."""
        self.rng = np.random.default_rng(derive_seed(seed, 0))
        seed_albumentations(self.rescale, derive_seed(seed, 1))
        seed_albumentations(self.flip_photo, derive_seed(seed, 2))

    def __call__(self, item: dict[str, Any]) -> dict[str, Any]:
        image, label = item["image"], np.asarray(item["sem_seg"]).astype(np.uint8)
        out = self.rescale(image=image, mask=label)
        image, label = out["image"], out["mask"]
        y, x = cat_max_ratio_crop(label, self.crop_size, self.cat_max_ratio, self.rng, self.ignore_index)
        ch, cw = self.crop_size
        out = self.flip_photo(image=image[y : y + ch, x : x + cw], mask=label[y : y + ch, x : x + cw])
        item["image"], item["sem_seg"] = np.ascontiguousarray(out["image"]), np.ascontiguousarray(out["mask"])
        return item


@TRANSFORMS.register()
class SemSegTestTransform:
    """Test-time resize of the image into a (h, w) box (aspect kept); the label and
    `orig_size` stay as they are, since predictions are resized back to `orig_size`.

    Args:
        scale: (h, w) box, or None to keep the image as it is.
    """

    def __init__(self, scale: Sequence[int] | None = None) -> None:
        self.resize = (
            A.LongestMaxSize(max_size_hw=_pair(scale, "scale"), p=1.0) if scale is not None else None
        )

    def __call__(self, item: dict[str, Any]) -> dict[str, Any]:
        if self.resize is not None:
            item["image"] = self.resize(image=item["image"])["image"]
        return item
