"""COCODetection: images and boxes of a COCO-format annotation file."""

from __future__ import annotations

import contextlib
import io
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pycocotools.coco import COCO
from torch.utils.data import Dataset

from densenets.config import DATASETS, TRANSFORMS, build

from .io import read_image

__all__ = ["COCODetection", "load_coco"]


def load_coco(ann_file: str | os.PathLike) -> COCO:
    """Load a COCO annotation file quietly, with errors that name the file."""
    path = Path(ann_file)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: COCO annotation file not found")
    try:
        with open(path) as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    missing = [k for k in ("images", "annotations", "categories") if k not in data]
    if missing:
        raise ValueError(f"{path}: not a COCO detection file (no {', '.join(missing)})")
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


@DATASETS.register()
class COCODetection(Dataset):
    """A COCO-layout detection dataset (``{root}/xxx.jpg`` + one instances JSON).

    Category ids are mapped to contiguous labels 0..K-1 in increasing id order
    (`label_to_category_id` maps back). Crowd boxes never enter ``instances``; boxes are
    clipped to the image and degenerate ones dropped.

    Args:
        root: image folder, e.g. ``datasets/coco/train2017``.
        ann_file: annotation JSON, e.g. ``datasets/coco/annotations/instances_train2017.json``.
        transforms: a `TRANSFORMS` config dict (e.g. ``DetectionTransform``) or a callable
            on the numpy item; None keeps the image as read.
        filter_empty: drop images without any usable (non-crowd, non-degenerate) box
            (for training).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        ann_file: str | os.PathLike,
        transforms: Mapping | Callable | None = None,
        filter_empty: bool = False,
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"{self.root}: COCO image folder not found")
        self.ann_file = Path(ann_file)
        self.coco = load_coco(ann_file)
        self.transforms = build(transforms, TRANSFORMS) if isinstance(transforms, Mapping) else transforms
        cat_ids = sorted(self.coco.cats)
        self.label_to_category_id: list[int] = cat_ids
        self.category_id_to_label = {c: i for i, c in enumerate(cat_ids)}
        self.class_names: list[str] = [self.coco.cats[c]["name"] for c in cat_ids]
        ids = sorted(self.coco.imgs)
        if filter_empty:
            ids = [i for i in ids if len(self._annotations(i)[0])]
        self.ids = ids
        self.aspect_ratios: list[float] = [
            self.coco.imgs[i]["width"] / self.coco.imgs[i]["height"] for i in ids
        ]

    def __len__(self) -> int:
        return len(self.ids)

    def _annotations(self, image_id: int) -> tuple[np.ndarray, np.ndarray]:
        """Non-crowd boxes (xyxy, clipped, non-empty) and their labels for one image."""
        info = self.coco.imgs[image_id]
        anns = [a for a in self.coco.imgToAnns.get(image_id, []) if not a.get("iscrowd", 0)]
        boxes = np.array([a["bbox"] for a in anns], dtype=np.float32).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]  # xywh -> xyxy
        boxes[:, 0::2] = boxes[:, 0::2].clip(0, info["width"])
        boxes[:, 1::2] = boxes[:, 1::2].clip(0, info["height"])
        labels = np.array([self.category_id_to_label[a["category_id"]] for a in anns], dtype=np.int64)
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        return boxes[keep], labels[keep]

    def __getitem__(self, index: int) -> dict[str, Any]:
        image_id = self.ids[index]
        info = self.coco.imgs[image_id]
        file_name = str(self.root / info["file_name"])
        image = read_image(file_name)
        if image.shape[:2] != (info["height"], info["width"]):
            raise ValueError(
                f"{file_name}: image is {image.shape[1]}x{image.shape[0]} but {self.ann_file} says "
                f"{info['width']}x{info['height']}"
            )
        boxes, labels = self._annotations(image_id)
        item = {
            "image_id": image_id,
            "file_name": file_name,
            "orig_size": (image.shape[0], image.shape[1]),
            "image": image,
            "instances": {"boxes": boxes, "labels": labels},
        }
        if self.transforms is not None:
            item = self.transforms(item)
        item["image"] = torch.from_numpy(np.ascontiguousarray(item["image"].transpose(2, 0, 1)))
        item["instances"] = {k: torch.as_tensor(v) for k, v in item["instances"].items()}
        return item

    def __repr__(self) -> str:
        return f"COCODetection(root={self.root}, ann_file={self.ann_file}, images={len(self)}, classes={len(self.class_names)})"
