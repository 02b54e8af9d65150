"""The "shapes" detection dataset: filled circles, squares and triangles on textured,
unevenly lit backgrounds, in COCO layout."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from ..io import write_image
from ._common import image_rng, padded_rect, size_hw, texture, to_uint8, write_json, write_stamp

__all__ = ["SHAPES_CATEGORIES", "make_shapes"]

SHAPES_CATEGORIES = [
    {"id": 1, "name": "circle", "supercategory": "shape"},
    {"id": 3, "name": "square", "supercategory": "shape"},
    {"id": 5, "name": "triangle", "supercategory": "shape"},
]


def _shape_mask(kind: str, cx: float, cy: float, size: float, angle: float, h: int, w: int, pad: int):
    """Binary mask (h + 2 pad, w + 2 pad) uint8 of one shape; pad lets shapes leave the image."""
    canvas = np.zeros((h + 2 * pad, w + 2 * pad), np.uint8)
    cx, cy = cx + pad, cy + pad
    if kind == "circle":
        cv2.circle(canvas, (round(cx * 16), round(cy * 16)), round(size / 2 * 16), 1, -1, cv2.LINE_8, 4)
        return canvas
    if kind == "square":
        corners = np.array([(-1, -1), (1, -1), (1, 1), (-1, 1)], np.float64) * size / 2
    else:  # equilateral triangle with circumradius size / sqrt(3), so its side is `size`
        t = np.deg2rad([90.0, 210.0, 330.0])
        corners = np.stack([np.cos(t), -np.sin(t)], 1) * size / np.sqrt(3)
    c, s = np.cos(angle), np.sin(angle)
    pts = corners @ np.array([[c, s], [-s, c]]) + (cx, cy)
    cv2.fillPoly(canvas, [np.round(pts * 16).astype(np.int32)], 1, cv2.LINE_8, 4)
    return canvas


def _pick_colour(rng: np.random.Generator, under: np.ndarray, min_distance: float = 90.0) -> np.ndarray:
    """A random RGB colour far enough from `under` (mean background colour)."""
    best, best_d = None, -1.0
    for _ in range(16):
        colour = rng.uniform(0, 255, 3).astype(np.float32)
        d = float(np.linalg.norm(colour - under))
        if d > best_d:
            best, best_d = colour, d
        if d >= min_distance:
            break
    return best


def _place_shapes(rng, img, n, h, w, min_size, max_size, min_visible):
    """Paint up to `n` shapes onto `img` in place; returns (instance map, kinds)."""
    inst = np.zeros((h, w), np.int32)  # 0 = background, k = k-th kept shape
    full_areas, kinds = [], []
    pad = int(max_size)
    lo, hi = np.log(min_size), np.log(max_size)
    for _ in range(n * 6):
        if len(kinds) == n:
            break
        cat = int(rng.integers(len(SHAPES_CATEGORIES)))
        kind = SHAPES_CATEGORIES[cat]["name"]
        size = float(np.exp(rng.uniform(lo, hi)))
        cx, cy = rng.uniform(0.1 * size, w - 0.1 * size), rng.uniform(0.1 * size, h - 0.1 * size)
        full = _shape_mask(kind, cx, cy, size, rng.uniform(0, 2 * np.pi), h, w, pad)
        full_area = int(full.sum())
        mask = full[pad : pad + h, pad : pad + w].astype(bool)
        if full_area == 0 or mask.sum() < min_visible * full_area:
            continue  # mostly outside the image
        # The new shape goes on top: every shape under it must stay visible enough.
        covered = np.bincount(inst[mask], minlength=len(kinds) + 1)[1:]
        visible = np.bincount(inst.ravel(), minlength=len(kinds) + 1)[1:] - covered
        if any(visible[k] < min_visible * full_areas[k] for k in range(len(kinds))):
            continue
        colour = _pick_colour(rng, img[mask].mean(0))
        x, y, bw, bh = padded_rect(mask, 2)
        paint = texture(rng, bh, bw, colour, amount=float(rng.uniform(10, 50)))
        alpha = cv2.GaussianBlur(mask[y : y + bh, x : x + bw].astype(np.float32), (3, 3), 0.6)[..., None]
        region = img[y : y + bh, x : x + bw]
        region[:] = region * (1 - alpha) + paint * alpha
        inst[mask] = len(kinds) + 1
        full_areas.append(full_area)
        kinds.append(cat)
    return inst, kinds


def _polygons(mask: np.ndarray, box: list[float]) -> list[list[float]]:
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    # Contours run through the centres of the boundary pixels: pixel c spans [c, c + 1).
    polys = [(c.reshape(-1) + 0.5).tolist() for c in contours if len(c) >= 3]
    if not polys:  # a sliver: fall back to its box
        x, y, bw, bh = box
        polys = [[x, y, x + bw, y, x + bw, y + bh, x, y + bh]]
    return polys


def _shapes_image(rng, h, w, max_objects, min_size, max_size, empty_fraction, min_visible):
    base = rng.uniform(30, 225, 3).astype(np.float32)
    img = texture(rng, h, w, base, amount=float(rng.uniform(30, 90)))
    # a soft gradient across the image, as from uneven lighting
    gy, gx = np.mgrid[0:h, 0:w].astype(np.float32)
    direction = rng.uniform(-1, 1, 2).astype(np.float32)
    img += (direction[0] * (gy / h - 0.5) + direction[1] * (gx / w - 0.5))[..., None] * 60
    img = np.clip(img, 0, 255)
    n = 0 if rng.random() < empty_fraction else int(rng.integers(1, max_objects + 1))
    inst, kinds = _place_shapes(rng, img, n, h, w, min_size, max_size, min_visible)
    img += rng.standard_normal(img.shape, dtype=np.float32) * float(rng.uniform(2, 8))
    annotations = []
    for k, cat in enumerate(kinds):
        vis = inst == k + 1
        ys, xs = np.nonzero(vis)
        box = [
            float(xs.min()),
            float(ys.min()),
            float(xs.max() + 1 - xs.min()),
            float(ys.max() + 1 - ys.min()),
        ]
        annotations.append(
            {
                "category_id": SHAPES_CATEGORIES[cat]["id"],
                "bbox": box,
                "area": float(vis.sum()),
                "iscrowd": 0,
                "segmentation": _polygons(vis, box),
            }
        )
    return to_uint8(img), annotations


def make_shapes(
    root: str | os.PathLike,
    num_train: int = 200,
    num_val: int = 50,
    image_size: int | tuple[int, int] = 320,
    seed: int = 0,
    max_objects: int = 6,
    object_size: tuple[float, float] = (0.08, 0.4),
    empty_fraction: float = 0.1,
    min_visible: float = 0.5,
) -> dict:
    """Write the "shapes" detection dataset in COCO layout.

    Each image holds 0..`max_objects` filled shapes (circle, square, triangle; random
    colour, scale, rotation, position) on a textured, noisy, unevenly lit background.
    Later shapes may occlude earlier ones, but every shape keeps at least `min_visible`
    of its area visible; boxes are tight around the visible pixels (COCO xywh, pixel
    edges, so a one-pixel object is `[x, y, 1, 1]`), `area` is the visible pixel count
    and `segmentation` holds the outlines of the visible parts as polygons.

    Args:
        root: output folder; gets `train2017/`, `val2017/` and `annotations/`.
        num_train, num_val: number of images per split.
        image_size: `S` for S x S images, or `(H, W)`.
        seed: everything is a function of the seed; same seed, byte-identical files.
        max_objects: most shapes per image.
        object_size: (min, max) shape size as a fraction of the shorter image side,
            drawn log-uniformly.
        empty_fraction: probability that an image holds no shape at all.
        min_visible: least visible fraction of every shape (occlusion and truncation).

    Returns:
        dict of paths (`root`, `train_images`, `val_images`, `train_ann`, `val_ann`) and
        `class_names` in category-id order.
    """
    root = Path(root)
    h, w = size_hw(image_size)
    sizes = (object_size[0] * min(h, w), object_size[1] * min(h, w))
    out = {"root": str(root), "class_names": [c["name"] for c in SHAPES_CATEGORIES]}
    for split, count, first_id in (("train", num_train, 1), ("val", num_val, 100001)):
        image_dir = root / f"{split}2017"
        image_dir.mkdir(parents=True, exist_ok=True)
        images, annotations = [], []
        for i in range(count):
            image_id = first_id + i
            img, anns = _shapes_image(
                image_rng(seed, split, i), h, w, max_objects, *sizes, empty_fraction, min_visible
            )
            file_name = f"{image_id:012d}.png"
            write_image(image_dir / file_name, img)
            images.append({"id": image_id, "file_name": file_name, "height": h, "width": w})
            for ann in anns:
                annotations.append({"id": len(annotations) + 1, "image_id": image_id, **ann})
        ann_file = root / "annotations" / f"instances_{split}2017.json"
        coco = {
            "info": {"description": f"densenets synthetic shapes, seed {seed}", "version": "1.0"},
            "licenses": [],
            "images": images,
            "annotations": annotations,
            "categories": SHAPES_CATEGORIES,
        }
        write_json(ann_file, coco)
        out[f"{split}_images"], out[f"{split}_ann"] = str(image_dir), str(ann_file)
    args = {"num_train": num_train, "num_val": num_val, "image_size": image_size, "seed": seed}
    args |= {"max_objects": max_objects, "object_size": object_size, "empty_fraction": empty_fraction}
    write_stamp(root, make_shapes, {**args, "min_visible": min_visible})
    return out
