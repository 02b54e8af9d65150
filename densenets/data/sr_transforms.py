"""Training augmentation for super-resolution pairs: aligned random crops, flips and
90 degree rotations, applied identically to `lr` and `hr` (numpy HWC uint8, 0..255).

Randomness comes from numpy's global generator, which the training loader seeds per
item, so patches depend only on the seed and the item's position in the stream.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from densenets.config import TRANSFORMS

__all__ = ["SRRandomCrop", "SRRandomFlipRotate", "sr_scale"]


def sr_scale(item: dict[str, Any]) -> int:
    """The integer scale between `item["hr"]` and `item["lr"]`; errors if not aligned."""
    (h, w), (H, W) = item["lr"].shape[:2], item["hr"].shape[:2]
    s = H // h if h else 0
    if s < 1 or (H, W) != (s * h, s * w):
        raise ValueError(f"{item.get('file_name', 'SR item')}: hr {H}x{W} is not an integer multiple of lr {h}x{w}")
    return s


@TRANSFORMS.register()
class SRRandomCrop:
    """A random `patch_size` x `patch_size` LR patch and the HR patch under it.

    Args:
        patch_size: LR patch side (EDSR: 48; the HR patch is scale times larger).
    """

    def __init__(self, patch_size: int = 48) -> None:
        self.patch_size = patch_size

    def __call__(self, item: dict[str, Any]) -> dict[str, Any]:
        s, p = sr_scale(item), self.patch_size
        h, w = item["lr"].shape[:2]
        if h < p or w < p:
            raise ValueError(f"{item.get('file_name', 'SR item')}: lr {h}x{w} is smaller than patch_size={p}")
        y, x = np.random.randint(0, h - p + 1), np.random.randint(0, w - p + 1)
        item["lr"] = item["lr"][y : y + p, x : x + p]
        item["hr"] = item["hr"][s * y : s * (y + p), s * x : s * (x + p)]
        return item


@TRANSFORMS.register()
class SRRandomFlipRotate:
    """Each of the 8 flips/rotations with equal probability (horizontal flip, vertical
    flip, transpose, each with probability 0.5), on `lr` and `hr` together.

    Args:
        flip: allow the flips.
        rotate: allow the transpose (with the flips: the 90 degree rotations).
    """

    def __init__(self, flip: bool = True, rotate: bool = True) -> None:
        self.flip = flip
        self.rotate = rotate

    def __call__(self, item: dict[str, Any]) -> dict[str, Any]:
        hflip = self.flip and np.random.rand() < 0.5
        vflip = self.flip and np.random.rand() < 0.5
        transpose = self.rotate and np.random.rand() < 0.5
        for key in ("lr", "hr"):
            img = item[key]
            if hflip:
                img = img[:, ::-1]
            if vflip:
                img = img[::-1]
            if transpose:
                img = img.transpose(1, 0, 2)
            item[key] = img
        return item
