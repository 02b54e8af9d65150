"""read_image / read_label / write_image against Pillow: EXIF orientation, grayscale,
palette, RGBA, 16-bit, float TIFF, unreadable files."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image, ImageOps

from densenets.data import ImageReadError, read_image, read_label, write_image

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (12, 20, 3), dtype=np.uint8)


@pytest.mark.parametrize("orientation", [1, 2, 3, 4, 5, 6, 7, 8])
def test_exif_orientation_matches_pillow(tmp_path, orientation):
    path = tmp_path / f"o{orientation}.jpg"
    im = Image.fromarray(RGB)
    exif = im.getexif()
    exif[0x0112] = orientation
    im.save(path, exif=exif.tobytes(), quality=100)
    expected = np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB"))
    got = read_image(path)
    assert got.shape == expected.shape and got.dtype == np.uint8
    # Same pixels up to JPEG decoder rounding differences.
    assert np.abs(got.astype(int) - expected).max() <= 2


def test_lossless_formats_are_exact(tmp_path):
    for ext in ("png", "bmp", "tif", "webp"):
        path = tmp_path / f"x.{ext}"
        Image.fromarray(RGB).save(path, **({"lossless": True} if ext == "webp" else {}))
        np.testing.assert_array_equal(read_image(path), RGB, err_msg=ext)


def test_grayscale_palette_and_binary_become_three_equal_channels(tmp_path):
    gray = RGB[..., 0]
    Image.fromarray(gray).save(tmp_path / "g.png")
    np.testing.assert_array_equal(read_image(tmp_path / "g.png"), np.repeat(gray[..., None], 3, 2))
    pal = Image.fromarray(RGB).convert("P", palette=Image.ADAPTIVE, colors=16)
    pal.save(tmp_path / "p.png")
    np.testing.assert_array_equal(read_image(tmp_path / "p.png"), np.asarray(pal.convert("RGB")))
    Image.fromarray(gray > 128).save(tmp_path / "b.png")
    np.testing.assert_array_equal(read_image(tmp_path / "b.png")[..., 0], np.where(gray > 128, 255, 0))


def test_rgba_drops_alpha_keeping_colour(tmp_path):
    rgba = np.dstack([RGB, RNG.integers(0, 256, RGB.shape[:2], dtype=np.uint8)])
    Image.fromarray(rgba).save(tmp_path / "a.png")
    np.testing.assert_array_equal(read_image(tmp_path / "a.png"), RGB)


def test_16bit_and_float_scale_to_8bit(tmp_path):
    deep = RNG.integers(0, 65536, RGB.shape, dtype=np.uint16)
    cv2.imwrite(str(tmp_path / "c.png"), deep[..., ::-1])
    np.testing.assert_array_equal(read_image(tmp_path / "c.png"), np.round(deep / 257).astype(np.uint8))
    Image.fromarray(deep[..., 0]).save(tmp_path / "g16.png")  # 16-bit grayscale (mode I;16)
    np.testing.assert_array_equal(read_image(tmp_path / "g16.png")[..., 1], np.round(deep[..., 0] / 257).astype(np.uint8))
    flt = RNG.random(RGB.shape, dtype=np.float32)
    cv2.imwrite(str(tmp_path / "f.tif"), flt[..., ::-1])
    np.testing.assert_array_equal(read_image(tmp_path / "f.tif"), np.round(flt * 255).astype(np.uint8))


def test_unreadable_files_name_the_file(tmp_path):
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8 garbage")
    (tmp_path / "empty.png").write_bytes(b"")
    for name in ("bad.jpg", "empty.png", "missing.png"):
        with pytest.raises(ImageReadError, match=name):
            read_image(tmp_path / name)


def test_labels_read_unchanged_and_write_round_trip(tmp_path):
    label = RNG.integers(0, 40, (9, 7), dtype=np.uint8)
    label[0, 0] = 255
    write_image(tmp_path / "sub/l.png", label)
    np.testing.assert_array_equal(read_label(tmp_path / "sub/l.png"), label)
    wide = (label.astype(np.uint16) * 300)
    cv2.imwrite(str(tmp_path / "w.png"), wide)
    assert read_label(tmp_path / "w.png").dtype == np.uint16
    write_image(tmp_path / "rgb.png", RGB)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "rgb.png")), RGB)  # RGB on disk
    with pytest.raises(ImageReadError, match="3 channels"):
        read_label(tmp_path / "rgb.png")
