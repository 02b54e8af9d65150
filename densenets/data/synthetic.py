"""Deterministic synthetic datasets in the real datasets' layouts, generated from a seed.

Three generators write small datasets that the loaders, learning tests and `make demo`
read exactly like the real ones:

* `make_shapes`: filled circles, squares and triangles on textured backgrounds, in COCO
  layout (`train2017/`, `val2017/`, `annotations/instances_*.json`). Category ids are
  1, 3, 5 (not contiguous) so the id <-> label mapping is exercised.
* `make_shapes_city`: street-like scenes in the official Cityscapes layout with real
  Cityscapes label ids, including ids that map to the ignore label.
* `make_sr_set`: crops of `skimage.data` photos in DIV2K layout with bicubic LR images,
  plus held-out photos as a validation split and a benchmark-style folder.

Every image is drawn from its own random stream `(seed, split, index)`, so the same
seed gives byte-identical files, and image `i` does not depend on how many were asked for.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
from pathlib import Path

import cv2
import numpy as np

from .io import write_image

__all__ = [
    "SHAPES_CATEGORIES",
    "CITY_LABEL_IDS",
    "CITY_IGNORED_LABEL_IDS",
    "SR_TRAIN_PHOTOS",
    "SR_VALID_PHOTOS",
    "make_shapes",
    "make_shapes_city",
    "make_sr_set",
    "STAMP_FILE",
    "describe",
]

SHAPES_CATEGORIES = [
    {"id": 1, "name": "circle", "supercategory": "shape"},
    {"id": 3, "name": "square", "supercategory": "shape"},
    {"id": 5, "name": "triangle", "supercategory": "shape"},
]

# Cityscapes label ids drawn by `make_shapes_city` (name -> official label id).
CITY_LABEL_IDS = {
    "road": 7,
    "sidewalk": 8,
    "building": 11,
    "pole": 17,
    "vegetation": 21,
    "sky": 23,
    "person": 24,
    "car": 26,
}
# Drawn too, but mapped to the ignore label by the Cityscapes label table.
CITY_IGNORED_LABEL_IDS = {"ego vehicle": 1, "rectification border": 2, "static": 4}

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

_SPLIT_CODES = {"train": 0, "val": 1, "test": 2}
STAMP_FILE = "generated.json"


def describe(generator: str, **kwargs) -> dict:
    """What `{root}/generated.json` holds after `generator(root, **kwargs)`: the
    generator's name, every argument (defaults filled in) and a digest of this file, so
    that an identical dataset can be recognised and kept."""
    func = {"make_shapes": make_shapes, "make_shapes_city": make_shapes_city, "make_sr_set": make_sr_set}[
        generator
    ]
    bound = inspect.signature(func).bind(None, **kwargs)
    bound.apply_defaults()
    args = {k: v for k, v in bound.arguments.items() if k != "root"}
    code = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]
    return json.loads(json.dumps({"generator": generator, "kwargs": args, "code": code}))


def _stamp(root: Path, generator: str, kwargs: dict) -> None:
    (root / STAMP_FILE).write_text(json.dumps(describe(generator, **kwargs), indent=2) + "\n")


def _rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, _SPLIT_CODES[split], index])


def _size_hw(image_size: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(image_size, int):
        return image_size, image_size
    h, w = image_size
    return int(h), int(w)


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cell: int, channels: int = 1) -> np.ndarray:
    """Value noise in [0, 1]: a coarse random grid upsampled bicubically, float32 (H, W, C)."""
    gh, gw = max(2, h // cell + 2), max(2, w // cell + 2)
    grid = rng.random((gh, gw, channels), dtype=np.float32)
    up = cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)
    return np.clip(up.reshape(h, w, channels), 0.0, 1.0)


def _texture(rng: np.random.Generator, h: int, w: int, base: np.ndarray, amount: float) -> np.ndarray:
    """A colour field around `base` (3,) with blotches and grain, float32 (H, W, 3) in 0-255."""
    blotch = _smooth_noise(rng, h, w, cell=int(rng.integers(8, 48)), channels=3) - 0.5
    grain = rng.standard_normal((h, w, 3), dtype=np.float32) * 0.15
    return base[None, None, :] + amount * (blotch + grain)


def _padded_rect(mask: np.ndarray, pad: int) -> tuple[int, int, int, int]:
    """(x, y, w, h) of the mask's bounding box grown by `pad`, clipped to the image."""
    x, y, w, h = cv2.boundingRect(mask.astype(np.uint8))
    x0, y0 = max(x - pad, 0), max(y - pad, 0)
    x1, y1 = min(x + w + pad, mask.shape[1]), min(y + h + pad, mask.shape[0])
    return x0, y0, x1 - x0, y1 - y0


def _to_uint8(img: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def _write_json(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        json.dump(obj, f, separators=(",", ":"))


# ----------------------------------------------------------------------------- shapes


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
        x, y, bw, bh = _padded_rect(mask, 2)
        paint = _texture(rng, bh, bw, colour, amount=float(rng.uniform(10, 50)))
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
    img = _texture(rng, h, w, base, amount=float(rng.uniform(30, 90)))
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
    return _to_uint8(img), annotations


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
    h, w = _size_hw(image_size)
    sizes = (object_size[0] * min(h, w), object_size[1] * min(h, w))
    out = {"root": str(root), "class_names": [c["name"] for c in SHAPES_CATEGORIES]}
    for split, count, first_id in (("train", num_train, 1), ("val", num_val, 100001)):
        image_dir = root / f"{split}2017"
        image_dir.mkdir(parents=True, exist_ok=True)
        images, annotations = [], []
        for i in range(count):
            image_id = first_id + i
            img, anns = _shapes_image(
                _rng(seed, split, i), h, w, max_objects, *sizes, empty_fraction, min_visible
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
        _write_json(ann_file, coco)
        out[f"{split}_images"], out[f"{split}_ann"] = str(image_dir), str(ann_file)
    args = {"num_train": num_train, "num_val": num_val, "image_size": image_size, "seed": seed}
    args |= {"max_objects": max_objects, "object_size": object_size, "empty_fraction": empty_fraction}
    _stamp(root, "make_shapes", {**args, "min_visible": min_visible})
    return out


# ------------------------------------------------------------------------ shapes-city

# Base colours (RGB) per drawn label id; each scene jitters them.
_CITY_COLOURS = {
    7: (95, 90, 100),  # road
    8: (170, 150, 140),  # sidewalk
    11: (150, 110, 90),  # building
    17: (70, 70, 60),  # pole
    21: (60, 130, 50),  # vegetation
    23: (120, 170, 230),  # sky
    24: (200, 60, 60),  # person
    26: (40, 60, 170),  # car
    1: (25, 25, 25),  # ego vehicle
    2: (0, 0, 0),  # rectification border
    4: (200, 180, 40),  # static
}
_CITY_TRAIN_CITIES = ("aachen", "bremen", "zurich")
_CITY_VAL_CITIES = ("frankfurt", "lindau", "munster")


class _Scene:
    """Image, label-id map and instance-id map painted together, layer by layer."""

    def __init__(self, rng: np.random.Generator, h: int, w: int) -> None:
        self.rng, self.h, self.w = rng, h, w
        self.img = np.zeros((h, w, 3), np.float32)
        self.label = np.zeros((h, w), np.uint8)  # 0 = unlabeled
        self.inst = np.zeros((h, w), np.int32)
        self.colours = {
            k: np.clip(np.array(c, np.float32) + rng.uniform(-25, 25, 3), 0, 255)
            for k, c in _CITY_COLOURS.items()
        }
        self.instances = {24: 0, 26: 0}

    def paint(self, mask: np.ndarray, label_id: int, amount: float = 25.0) -> None:
        mask = mask.astype(bool)
        if not mask.any():
            return
        x, y, w, h = _padded_rect(mask, 0)
        tex = _texture(self.rng, h, w, self.colours[label_id], amount)
        sub = mask[y : y + h, x : x + w]
        self.img[y : y + h, x : x + w][sub] = tex[sub]
        self.label[mask] = label_id
        if label_id in self.instances:  # Cityscapes instance ids: label_id * 1000 + k
            self.inst[mask] = label_id * 1000 + self.instances[label_id]
            self.instances[label_id] += 1
        else:
            self.inst[mask] = label_id

    def blank(self) -> np.ndarray:
        return np.zeros((self.h, self.w), np.uint8)


def _poly_mask(scene: _Scene, pts) -> np.ndarray:
    m = scene.blank()
    cv2.fillPoly(m, [np.round(np.asarray(pts)).astype(np.int32)], 1)
    return m


def _city_background(scene: _Scene, horizon: int, vx: float) -> None:
    h, w, rng = scene.h, scene.w, scene.rng
    sky = scene.blank()
    sky[:horizon] = 1
    scene.paint(sky, 23, amount=15)
    x = -int(rng.integers(0, w // 8))
    while x < w:  # buildings: a row of blocks of random width and height
        bw = int(rng.integers(w // 10, w // 4))
        top = int(rng.uniform(0.05, 0.8) * horizon)
        m = scene.blank()
        m[top:horizon, max(x, 0) : x + bw] = 1
        scene.colours[11] = np.clip(np.array(_CITY_COLOURS[11], np.float32) + rng.uniform(-40, 40, 3), 0, 255)
        scene.paint(m, 11, amount=35)
        x += bw + int(rng.integers(0, w // 12))
    for _ in range(int(rng.integers(1, 5))):  # trees: blobs over the buildings
        m = scene.blank()
        cx, cy = int(rng.uniform(0, w)), int(rng.uniform(0.3, 0.95) * horizon)
        axes = (int(rng.uniform(0.04, 0.12) * w), int(rng.uniform(0.1, 0.35) * horizon))
        cv2.ellipse(m, (cx, cy), axes, 0, 0, 360, 1, -1)
        m[horizon:] = 0
        scene.paint(m, 21, amount=45)
    ground = scene.blank()
    ground[horizon:] = 1
    scene.paint(ground, 8, amount=20)
    half_top, xl, xr = w * 0.02, rng.uniform(-0.2, 0.3) * w, rng.uniform(0.7, 1.2) * w
    scene.paint(
        _poly_mask(scene, [(vx - half_top, horizon), (vx + half_top, horizon), (xr, h), (xl, h)]), 7, 12
    )


def _city_objects(scene: _Scene, horizon: int, vx: float) -> None:
    h, w, rng = scene.h, scene.w, scene.rng
    for _ in range(int(rng.integers(0, 4))):  # poles on the sidewalk
        x = int(rng.choice([rng.uniform(0, 0.15), rng.uniform(0.85, 1.0)]) * w)
        bottom = int(rng.uniform(horizon + 0.1 * (h - horizon), h))
        m = scene.blank()
        m[int(0.2 * horizon) : bottom, x : x + max(2, w // 100)] = 1
        scene.paint(m, 17, amount=10)
    if rng.random() < 0.5:  # a bin or bench: "static", an ignored id
        m = scene.blank()
        x, y = int(rng.uniform(0, w)), int(rng.uniform(horizon + 2, h))
        cv2.rectangle(m, (x, y - h // 20), (x + w // 30, y), 1, -1)
        scene.paint(m, 4, amount=10)
    # cars on the road and people on the sidewalks, far (small) to near (large)
    things = [(26, rng.uniform(0, 1)) for _ in range(int(rng.integers(1, 5)))]
    things += [(24, rng.uniform(0, 1)) for _ in range(int(rng.integers(0, 5)))]
    for label_id, depth in sorted(things, key=lambda t: t[1]):
        y = horizon + (0.1 + 0.85 * depth) * (h - horizon)
        scale = (y - horizon) / (h - horizon)
        m = scene.blank()
        if label_id == 26:
            cw, ch = scale * w * rng.uniform(0.2, 0.3), scale * h * rng.uniform(0.2, 0.3)
            x = vx + rng.uniform(-0.6, 0.6) * scale * w * 0.5
            cv2.rectangle(m, (int(x - cw / 2), int(y - ch * 0.6)), (int(x + cw / 2), int(y)), 1, -1)
            cv2.ellipse(m, (int(x), int(y - ch * 0.6)), (int(cw * 0.3), int(ch * 0.4)), 0, 180, 360, 1, -1)
        else:
            ph = scale * h * rng.uniform(0.35, 0.5)
            side = rng.choice([-1.0, 1.0])
            x = vx + side * rng.uniform(0.35, 0.6) * w * scale + side * 0.05 * w
            cv2.ellipse(
                m, (int(x), int(y - ph * 0.4)), (max(1, int(ph * 0.12)), int(ph * 0.4)), 0, 0, 360, 1, -1
            )
            cv2.circle(m, (int(x), int(y - ph * 0.88)), max(1, int(ph * 0.1)), 1, -1)
        scene.paint(m, label_id, amount=30)


def _city_scene(rng: np.random.Generator, h: int, w: int):
    scene = _Scene(rng, h, w)
    horizon = int(rng.uniform(0.35, 0.5) * h)
    vx = rng.uniform(0.35, 0.65) * w
    _city_background(scene, horizon, vx)
    _city_objects(scene, horizon, vx)
    if rng.random() < 0.5:  # the car's own bonnet at the bottom: "ego vehicle"
        m = scene.blank()
        cv2.ellipse(m, (w // 2, h), (int(w * 0.6), int(h * rng.uniform(0.06, 0.12))), 0, 180, 360, 1, -1)
        scene.paint(m, 1, amount=5)
    if rng.random() < 0.3:  # a thin frame, as left by rectification: "rectification border"
        m = np.ones((h, w), np.uint8)
        b = max(1, h // 64)
        m[b:-b, b:-b] = 0
        scene.paint(m, 2, amount=0)
    scene.img += rng.standard_normal(scene.img.shape, dtype=np.float32) * 3
    return _to_uint8(scene.img), scene.label, scene.inst.astype(np.uint16)


def make_shapes_city(
    root: str | os.PathLike,
    num_train: int = 60,
    num_val: int = 20,
    image_size: tuple[int, int] = (256, 512),
    seed: int = 0,
) -> dict:
    """Write the "shapes-city" segmentation dataset in the official Cityscapes layout.

    Scenes of sky, buildings, trees, a road in perspective with sidewalks, poles, cars
    and people, each class textured with a per-scene colour; some scenes also hold
    "static" objects, an "ego vehicle" bonnet or a "rectification border" (ids mapped to
    ignore). Files, as in Cityscapes:
    `leftImg8bit/{split}/{city}/{city}_{seq:06d}_000019_leftImg8bit.png` (RGB) and
    `gtFine/{split}/{city}/{city}_{seq:06d}_000019_gtFine_labelIds.png` (uint8 label ids)
    with `..._gtFine_instanceIds.png` (uint16; label id, or label id * 1000 + k for cars
    and people).

    Args:
        root: output folder; gets `leftImg8bit/` and `gtFine/`.
        num_train, num_val: number of scenes per split.
        image_size: (H, W); Cityscapes itself is 1024 x 2048.
        seed: same seed, byte-identical files.

    Returns:
        dict with `root`, `label_ids` (name -> id drawn) and `ignored_label_ids`.
    """
    root = Path(root)
    h, w = _size_hw(image_size)
    for split, count, cities in (
        ("train", num_train, _CITY_TRAIN_CITIES),
        ("val", num_val, _CITY_VAL_CITIES),
    ):
        for i in range(count):
            img, label, inst = _city_scene(_rng(seed, split, i), h, w)
            city = cities[i % len(cities)]
            stem = f"{city}_{i:06d}_000019"
            write_image(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png", img)
            write_image(root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png", label)
            write_image(root / "gtFine" / split / city / f"{stem}_gtFine_instanceIds.png", inst)
    args = {"num_train": num_train, "num_val": num_val, "image_size": image_size, "seed": seed}
    _stamp(root, "make_shapes_city", args)
    return {
        "root": str(root),
        "label_ids": dict(CITY_LABEL_IDS),
        "ignored_label_ids": dict(CITY_IGNORED_LABEL_IDS),
    }


# ------------------------------------------------------------------ super-resolution


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
    from .imresize import imresize

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
        rng = _rng(seed, "train", i)
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
    _stamp(root, "make_sr_set", {**args, "valid_max_size": valid_max_size})
    return {
        "root": str(root),
        "train_hr": str(root / "DIV2K_train_HR"),
        "valid_hr": str(root / "DIV2K_valid_HR"),
        "benchmark": str(root / "benchmark" / "Photos"),
        "scales": list(scales),
    }
