"""Image reading and writing: every image becomes uint8 RGB, whatever its file holds."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

__all__ = [
    "ImageReadError",
    "ImageTooLargeError",
    "MAX_IMAGE_PIXELS",
    "image_pixels",
    "read_image",
    "read_label",
    "write_image",
    "IMAGE_EXTENSIONS",
    "to_uint8",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")

# Pillow's own default (`PIL.Image.MAX_IMAGE_PIXELS`): a 1024 MiB RGBA image, ~179 MP.
MAX_IMAGE_PIXELS = int(1024 * 1024 * 1024 // 4 // 3)


class ImageReadError(OSError):
    """A file that is not a readable image; the message names the file."""


class ImageTooLargeError(ImageReadError):
    """An image whose header declares more pixels than allowed (a decompression bomb)."""


def _read_bytes(path: str | os.PathLike) -> np.ndarray:
    try:
        mode = os.stat(path).st_mode
        if not stat.S_ISREG(mode):  # a FIFO would block the reader forever
            raise ImageReadError(f"{path}: not a regular file")
        return np.fromfile(str(path), dtype=np.uint8)
    except ImageReadError:
        raise
    except OSError as e:
        raise ImageReadError(f"{path}: cannot read file ({e.strerror or e})") from None


def image_pixels(path: str | os.PathLike) -> tuple[int, int] | None:
    """(H, W) from the file's header without decoding it, or None when no Pillow plugin
    identifies the header (a corrupt file; the decoder then reports it).

    Every Pillow format (PNG, JPEG, BMP, TIFF, WebP, ...) at any bit depth. Pillow's own
    decompression-bomb check is not applied here, so sizes beyond it are still read.
    """
    Image.init()  # register every plugin
    with open(path, "rb") as fp:
        prefix = fp.read(16)
        for fmt in Image.ID:
            factory, accept = Image.OPEN[fmt]
            try:
                accepted = True if accept is None else accept(prefix)
                if isinstance(accepted, str) or not accepted:  # a str is Pillow's "almost" warning
                    continue
                fp.seek(0)
                width, height = factory(fp, os.fspath(path)).size
            except Exception:  # noqa: BLE001 - a plugin that cannot parse this header: try the next
                continue
            return int(height), int(width)
    return None


def check_pixels(path: str | os.PathLike, max_pixels: int | None) -> None:
    """Raise ImageTooLargeError when the header of `path` declares more than `max_pixels`."""
    if not max_pixels:
        return
    size = image_pixels(path)
    if size is not None and size[0] * size[1] > max_pixels:
        h, w = size
        raise ImageTooLargeError(
            f"{path}: {h}x{w} = {h * w} pixels exceeds the pixel limit of {int(max_pixels)} "
            "(a decompression bomb?); not decoded (raise infer.max_pixels to allow it)"
        )


def to_uint8(img: np.ndarray) -> np.ndarray:
    """16-bit -> 8-bit by rounding (x / 257), float in [0, 1] -> x * 255."""
    if img.dtype == np.uint8:
        return img
    if img.dtype == np.uint16:
        return np.round(img.astype(np.float32) / 257.0).astype(np.uint8)
    if np.issubdtype(img.dtype, np.floating):
        return np.clip(np.round(img * 255.0), 0, 255).astype(np.uint8)
    return np.clip(img, 0, 255).astype(np.uint8)


def read_image(path: str | os.PathLike, max_pixels: int | None = None) -> np.ndarray:
    """Read an image file as uint8 RGB.

    EXIF orientation is applied; grayscale becomes three equal channels; alpha is
    dropped; 16-bit and float images are scaled to 8 bits.

    Args:
        path: the image file.
        max_pixels: refuse, before decoding, an image whose header declares more pixels
            (None: no limit of ours; OpenCV's own limit of 2^30 pixels remains).

    Returns:
        np.ndarray[H, W, 3] uint8, RGB.

    Raises:
        ImageTooLargeError: more than `max_pixels` pixels.
        ImageReadError: the file is missing or not a decodable image.
    """
    data = _read_bytes(path)
    check_pixels(path, max_pixels)
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
