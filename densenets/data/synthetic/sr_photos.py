"""A super-resolution set from `skimage.data` photos in DIV2K layout, with bicubic LR
images, held-out photos as the validation split and a benchmark-style folder."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..io import write_image
from ._common import image_rng, write_stamp

__all__ = ["SR_TRAIN_PHOTOS", "SR_VALID_PHOTOS", "make_sr_set"]

SR_TRAIN_PHOTOS = (
    "astronaut",
    "coffee",
    "rocket",
    "immunohistochemistry",
    "hubble_deep_field",
    "retina",
    "stereo_motorcycle",
    "camera",
    "brick",
    "gravel",
)
SR_VALID_PHOTOS = ("chelsea", "clock", "coins")


def _photo(name: str) -> np.ndarray:
    """An `skimage.data` photo as uint8 RGB (H, W, 3); grey photos get three channels."""
    import skimage.data

    img = getattr(skimage.data, name)()
    if isinstance(img, tuple):  # stereo pairs: the left view
        img = img[0]
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    return np.ascontiguousarray(img[..., :3])


def _crop_to_multiple(img: np.ndarray, m: int) -> np.ndarray:
    h, w = img.shape[0] // m * m, img.shape[1] // m * m
    return img[:h, :w]


def _write_sr_pair(root: Path, hr_dir: str, lr_dir: str, name: str, hr: np.ndarray, scales) -> None:
    write_image(root / hr_dir / f"{name}.png", hr)
    if not scales:
        return
    from ..imresize import imresize

    for s in scales:
        lr = imresize(hr, 1.0 / s)
        write_image(root / lr_dir / f"X{s}" / f"{name}x{s}.png", lr)


def make_sr_set(
    root: str | os.PathLike,
    num_train: int = 32,
    hr_size: int = 192,
    scales: tuple[int, ...] = (2, 3, 4),
    seed: int = 0,
    valid_max_size: int = 360,
) -> dict:
    """Write a super-resolution set from `skimage.data` photos in DIV2K layout.

    Training images are random `hr_size` crops (with random flips and 90 degree
    rotations) of the photos in `SR_TRAIN_PHOTOS`, taken in turn; the photos in
    `SR_VALID_PHOTOS` are held out whole (centre crop of at most `valid_max_size`).
    LR images are made by MATLAB-compatible bicubic downscaling
    (`densenets.data.imresize.imresize`), as DIV2K's and the benchmarks' were. Files:

    * `DIV2K_train_HR/0001.png`, `DIV2K_train_LR_bicubic/X{s}/0001x{s}.png`
    * `DIV2K_valid_HR/0801.png`, `DIV2K_valid_LR_bicubic/X{s}/0801x{s}.png`
    * `benchmark/Photos/HR/chelsea.png`, `benchmark/Photos/LR_bicubic/X{s}/chelseax{s}.png`
      (the held-out photos again, in the Set5/Set14 benchmark layout)

    Args:
        root: output folder.
        num_train: number of training crops.
        hr_size: side of a training crop; must be divisible by every scale.
        scales: downscaling factors for the LR folders; empty writes HR only.
        seed: same seed, byte-identical files.
        valid_max_size: largest side of a held-out image.

    Returns:
        dict of folders (`root`, `train_hr`, `valid_hr`, `benchmark`) and `scales`.
    """
    root = Path(root)
    lcm = int(np.lcm.reduce([1, *scales]))
    if hr_size % lcm:
        raise ValueError(f"hr_size={hr_size} is not divisible by every scale in {tuple(scales)}")
    photos = [_photo(n) for n in SR_TRAIN_PHOTOS]
    for i in range(num_train):
        rng = image_rng(seed, "train", i)
        photo = photos[i % len(photos)]
        y = int(rng.integers(0, photo.shape[0] - hr_size + 1))
        x = int(rng.integers(0, photo.shape[1] - hr_size + 1))
        crop = np.rot90(photo[y : y + hr_size, x : x + hr_size], k=int(rng.integers(4)))
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        name = f"{i + 1:04d}"
        _write_sr_pair(
            root, "DIV2K_train_HR", "DIV2K_train_LR_bicubic", name, np.ascontiguousarray(crop), scales
        )
    for i, photo_name in enumerate(SR_VALID_PHOTOS):
        photo = _photo(photo_name)
        ph, pw = min(photo.shape[0], valid_max_size), min(photo.shape[1], valid_max_size)
        y0, x0 = (photo.shape[0] - ph) // 2, (photo.shape[1] - pw) // 2
        hr = np.ascontiguousarray(_crop_to_multiple(photo[y0 : y0 + ph, x0 : x0 + pw], lcm))
        _write_sr_pair(root, "DIV2K_valid_HR", "DIV2K_valid_LR_bicubic", f"{801 + i:04d}", hr, scales)
        _write_sr_pair(root, "benchmark/Photos/HR", "benchmark/Photos/LR_bicubic", photo_name, hr, scales)
    args = {"num_train": num_train, "hr_size": hr_size, "scales": scales, "seed": seed}
    write_stamp(root, make_sr_set, {**args, "valid_max_size": valid_max_size})
    return {
        "root": str(root),
        "train_hr": str(root / "DIV2K_train_HR"),
        "valid_hr": str(root / "DIV2K_valid_HR"),
        "benchmark": str(root / "benchmark" / "Photos"),
        "scales": list(scales),
    }
