"""Super-resolution datasets: pairs of a high-resolution image and its bicubic
downscaled version.

Layouts (file names as published):

* DIV2K (Agustsson & Timofte, NTIRE 2017): ``DIV2K_train_HR/0001.png`` with
  ``DIV2K_train_LR_bicubic/X2/0001x2.png`` (``valid`` for images 0801-0900).
* Benchmarks (Set5, Set14, B100, Urban100): ``Set5/HR/baby.png`` with
  ``Set5/LR_bicubic/X2/babyx2.png``.
* Any folder of HR images: LR images are made on the fly with MATLAB-compatible
  bicubic downscaling (`densenets.data.imresize`), as the published ones were.

Items: `lr` uint8 [3, h, w], `hr` uint8 [3, s*h, s*w] (the HR image cropped at the
bottom/right to exactly s times the LR size), `image_id` (file stem), `file_name` (HR
path), `orig_size` (HR height, width).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from densenets.config import DATASETS, TRANSFORMS, build

from .imresize import imresize
from .io import IMAGE_EXTENSIONS, read_image

__all__ = ["SRPairs", "DIV2K", "DIV2K_RGB_MEAN", "SRBenchmark", "SRImageFolder", "build_transforms"]

# Mean RGB of DIV2K's training images in 0..255, the EDSR checkpoints' mean shift.
DIV2K_RGB_MEAN = (0.4488 * 255, 0.4371 * 255, 0.4040 * 255)

Transform = Callable[[dict[str, Any]], dict[str, Any]]


def build_transforms(spec: Any) -> Transform | None:
    """None, a callable, a `{type: ...}` dict (from TRANSFORMS) or a list of those -> one callable."""
    if spec is None or callable(spec):
        return spec
    if isinstance(spec, Mapping):
        return build(spec, TRANSFORMS)
    return TransformList([build_transforms(s) for s in spec])


class TransformList:
    """Transforms applied in order; `transforms` lets the loader seed each one."""

    def __init__(self, transforms: Sequence[Transform]) -> None:
        self.transforms = list(transforms)

    def __call__(self, item: dict[str, Any]) -> dict[str, Any]:
        for step in self.transforms:
            item = step(item)
        return item

    def __repr__(self) -> str:
        return f"TransformList({self.transforms})"


def _images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: image folder not found")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise FileNotFoundError(f"{folder}: no images ({', '.join(IMAGE_EXTENSIONS)})")
    return files


def _chw(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))


class SRPairs(Dataset):
    """HR images with their LR files (or LR made on the fly), repeated and augmented.

    Args:
        hr_files: HR image paths.
        lr_files: the LR path of each HR image, or None to downscale the HR image.
        scale: the integer downscaling factor.
        transforms: training augmentation on the numpy item (see `build_transforms`).
        repeat: times each image appears per epoch (training: many patches per image).
        cache: keep decoded (and downscaled) images in memory after the first read.
    """

    def __init__(
        self,
        hr_files: Sequence[str | os.PathLike],
        lr_files: Sequence[str | os.PathLike] | None,
        scale: int,
        transforms: Any = None,
        repeat: int = 1,
        cache: bool = False,
    ) -> None:
        if not isinstance(scale, int) or scale < 1:
            raise ValueError(f"{type(self).__name__}: scale must be a positive integer, got {scale!r}")
        if repeat < 1:
            raise ValueError(f"{type(self).__name__}: repeat must be >= 1, got {repeat}")
        self.hr_files = [Path(p) for p in hr_files]
        self.lr_files = None if lr_files is None else [Path(p) for p in lr_files]
        self.scale = scale
        self.transforms = build_transforms(transforms)
        self.repeat = repeat
        self.cache = cache
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def __len__(self) -> int:
        return len(self.hr_files) * self.repeat

    def load_pair(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(lr, hr) HWC uint8 of image `index` (not repeated, not augmented), aligned."""
        if index in self._cache:
            return self._cache[index]
        s, hr_path = self.scale, self.hr_files[index]
        hr = read_image(hr_path)
        if self.lr_files is None:
            hr = hr[: hr.shape[0] // s * s, : hr.shape[1] // s * s]
            if hr.size == 0:
                raise ValueError(f"{hr_path}: smaller than the scale {s}")
            lr = imresize(hr, 1 / s)
        else:
            lr = read_image(self.lr_files[index])
            h, w = lr.shape[:2]
            if hr.shape[0] < s * h or hr.shape[1] < s * w:
                raise ValueError(
                    f"{hr_path}: HR {hr.shape[0]}x{hr.shape[1]} is smaller than {s} x LR "
                    f"{h}x{w} of {self.lr_files[index]}"
                )
            hr = hr[: s * h, : s * w]
        if self.cache:
            self._cache[index] = (lr, hr)
        return lr, hr

    def __getitem__(self, i: int) -> dict[str, Any]:
        if not 0 <= i < len(self):
            raise IndexError(f"{type(self).__name__}: index {i} out of range for {len(self)} items")
        index = i % len(self.hr_files)
        lr, hr = self.load_pair(index)
        path = self.hr_files[index]
        item = {"lr": lr, "hr": hr, "image_id": path.stem, "file_name": str(path), "orig_size": hr.shape[:2]}
        if self.transforms is not None:
            item = self.transforms(item)
        item["lr"], item["hr"] = _chw(item["lr"]), _chw(item["hr"])
        return item


def _lr_files(hr_files: list[Path], lr_dir: Path, scale: int) -> list[Path]:
    """`name.png` -> `lr_dir/namex{scale}.png`, each checked to exist."""
    out = []
    for hr in hr_files:
        lr = lr_dir / f"{hr.stem}x{scale}{hr.suffix}"
        if not lr.is_file():
            raise FileNotFoundError(f"{lr}: LR image of {hr} not found (or set lr_on_the_fly: true)")
        out.append(lr)
    return out


@DATASETS.register()
class DIV2K(SRPairs):
    """DIV2K in its published layout under `root`.

    Args:
        root: folder holding ``DIV2K_{split}_HR`` and ``DIV2K_{split}_LR_bicubic/X{scale}``.
        split: ``train`` (0001-0800) or ``valid`` (0801-0900).
        scale: 2, 3 or 4.
        transforms: training augmentation (e.g. `SRRandomCrop`, `SRRandomFlipRotate`).
        repeat: times each image appears per epoch.
        index_range: [first, last] image numbers to use (inclusive), e.g. [801, 810].
        lr_on_the_fly: ignore the LR folder and downscale the HR images.
        cache: keep decoded images in memory (DIV2K train: about 6.6 GB at x2).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        scale: int = 2,
        transforms: Any = None,
        repeat: int = 1,
        index_range: Sequence[int] | None = None,
        lr_on_the_fly: bool = False,
        cache: bool = False,
    ) -> None:
        if split not in ("train", "valid"):
            raise ValueError(f"DIV2K: split must be 'train' or 'valid', got {split!r}")
        root = Path(root)
        hr_files = _images(root / f"DIV2K_{split}_HR")
        if index_range is not None:
            first, last = index_range
            hr_files = [p for p in hr_files if p.stem.isdigit() and first <= int(p.stem) <= last]
            if not hr_files:
                raise FileNotFoundError(f"{root / f'DIV2K_{split}_HR'}: no images numbered {first}-{last}")
        lr_dir = root / f"DIV2K_{split}_LR_bicubic" / f"X{scale}"
        lr_files = None if lr_on_the_fly else _lr_files(hr_files, lr_dir, scale)
        super().__init__(hr_files, lr_files, scale, transforms, repeat, cache)


@DATASETS.register()
class SRBenchmark(SRPairs):
    """A benchmark set (Set5, Set14, B100, Urban100) in the EDSR layout.

    Args:
        root: the set's folder, holding ``HR/`` and ``LR_bicubic/X{scale}/``.
        scale: 2, 3 or 4.
        lr_on_the_fly: downscale the HR images instead of reading ``LR_bicubic``.
    """

    def __init__(self, root: str | os.PathLike, scale: int = 2, lr_on_the_fly: bool = False) -> None:
        root = Path(root)
        hr_files = _images(root / "HR")
        lr_files = None if lr_on_the_fly else _lr_files(hr_files, root / "LR_bicubic" / f"X{scale}", scale)
        super().__init__(hr_files, lr_files, scale)


@DATASETS.register()
class SRImageFolder(SRPairs):
    """Every image in `root` as an HR image; LR made by MATLAB-compatible bicubic.

    Args:
        root: a folder of images.
        scale: downscaling factor.
        transforms: training augmentation.
        repeat: times each image appears per epoch.
        cache: keep decoded and downscaled images in memory (downscaling a 2K image
            takes about half a second).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        scale: int = 2,
        transforms: Any = None,
        repeat: int = 1,
        cache: bool = False,
    ) -> None:
        super().__init__(_images(Path(root)), None, scale, transforms, repeat, cache)
