"""The "shapes-city" segmentation dataset: street-like scenes in the official Cityscapes
layout with real Cityscapes label ids, including ids that map to the ignore label."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from ..io import write_image
from ._common import image_rng, padded_rect, size_hw, texture, to_uint8, write_stamp

__all__ = ["CITY_LABEL_IDS", "CITY_IGNORED_LABEL_IDS", "make_shapes_city"]

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
        x, y, w, h = padded_rect(mask, 0)
        tex = texture(self.rng, h, w, self.colours[label_id], amount)
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
    return to_uint8(scene.img), scene.label, scene.inst.astype(np.uint16)


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
    h, w = size_hw(image_size)
    for split, count, cities in (
        ("train", num_train, _CITY_TRAIN_CITIES),
        ("val", num_val, _CITY_VAL_CITIES),
    ):
        for i in range(count):
            img, label, inst = _city_scene(image_rng(seed, split, i), h, w)
            city = cities[i % len(cities)]
            stem = f"{city}_{i:06d}_000019"
            write_image(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png", img)
            write_image(root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png", label)
            write_image(root / "gtFine" / split / city / f"{stem}_gtFine_instanceIds.png", inst)
    args = {"num_train": num_train, "num_val": num_val, "image_size": image_size, "seed": seed}
    write_stamp(root, make_shapes_city, args)
    return {
        "root": str(root),
        "label_ids": dict(CITY_LABEL_IDS),
        "ignored_label_ids": dict(CITY_IGNORED_LABEL_IDS),
    }
