"""Image reading and writing: every image becomes uint8 RGB, whatever its file holds."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

__all__ = ["ImageReadError", "read_image", "read_label", "write_image", "IMAGE_EXTENSIONS", "to_uint8"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


class ImageReadError(OSError):
    """A file that is not a readable image; the message names the file."""


def _read_bytes(path: str | os.PathLike) -> np.ndarray:
    try:
        return np.fromfile(str(path), dtype=np.uint8)
    except OSError as e:
        raise ImageReadError(f"{path}: cannot read file ({e.strerror or e})") from None


def to_uint8(img: np.ndarray) -> np.ndarray:
    """16-bit -> 8-bit by rounding (x / 257), float in [0, 1] -> x * 255."""
    if img.dtype == np.uint8:
        return img
    if img.dtype == np.uint16:
        return np.round(img.astype(np.float32) / 257.0).astype(np.uint8)
    if np.issubdtype(img.dtype, np.floating):
        return np.clip(np.round(img * 255.0), 0, 255).astype(np.uint8)
    return np.clip(img, 0, 255).astype(np.uint8)


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as uint8 RGB.

    EXIF orientation is applied; grayscale becomes three equal channels; alpha is
    dropped; 16-bit and float images are scaled to 8 bits.

    Returns:
        np.ndarray[H, W, 3] uint8, RGB.

    Raises:
        ImageReadError: the file is missing or not a decodable image.
    """
    data = _read_bytes(path)
    img = cv2.imdecode(data, cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH) if data.size else None
    if img is None:
        raise ImageReadError(f"{path}: not a readable image")
    img = to_uint8(img)
    return np.ascontiguousarray(img[:, :, ::-1])


def read_label(path: str | os.PathLike) -> np.ndarray:
    """Read a single-channel label PNG unchanged (np.ndarray[H, W], uint8 or uint16)."""
    data = _read_bytes(path)
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if img is None:
        raise ImageReadError(f"{path}: not a readable label image")
    if img.ndim == 3:
        raise ImageReadError(f"{path}: label image has {img.shape[2]} channels, expected 1")
    return img


def write_image(path: str | os.PathLike, img: np.ndarray) -> None:
    """Write an RGB (H, W, 3) or single-channel (H, W) uint8 image; format from suffix."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    out = img[:, :, ::-1] if img.ndim == 3 else img
    ok, buf = cv2.imencode(path.suffix or ".png", np.ascontiguousarray(out))
    if not ok:
        raise OSError(f"{path}: cannot encode image")
    buf.tofile(str(path))
