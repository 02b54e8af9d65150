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

__all__ = ["COCODetection", "load_coco", "coco_problems"]


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _dict_entries(data: Mapping, key: str, problems: list[str]) -> list[Mapping]:
    entries = data[key]
    if not isinstance(entries, list):
        problems.append(f"'{key}' must be a list, got {type(entries).__name__}")
        return []
    bad = next((i for i, e in enumerate(entries) if not isinstance(e, Mapping)), None)
    if bad is not None:
        problems.append(f"{key}[{bad}]: expected an object, got {entries[bad]!r}")
    return [e for e in entries if isinstance(e, Mapping)]


def _image_problems(images: list[Mapping], problems: list[str]) -> set:
    seen: dict[Any, int] = {}
    for i, img in enumerate(images):
        if "id" not in img:
            problems.append(f"images[{i}]: no 'id'")
            continue
        where = f"image id {img['id']}"
        if img["id"] in seen:
            problems.append(f"{where}: duplicate image id (images[{seen[img['id']]}] and images[{i}])")
        seen.setdefault(img["id"], i)
        for key in ("file_name", "width", "height"):
            if key not in img:
                problems.append(f"{where}: no '{key}'")
        for key in ("width", "height"):
            if key in img and not (
                isinstance(img[key], int) and not isinstance(img[key], bool) and img[key] > 0
            ):
                problems.append(f"{where}: '{key}' must be a positive integer, got {img[key]!r}")
    return set(seen)


def _annotation_problems(ann: Mapping, i: int, image_ids: set, cat_ids: set) -> list[str]:
    where = f"annotation id {ann['id']}" if "id" in ann else f"annotations[{i}] (no 'id')"
    out = [f"{where}: no '{k}'" for k in ("image_id", "category_id", "bbox") if k not in ann]
    if "image_id" in ann and ann["image_id"] not in image_ids:
        out.append(f"{where}: image_id {ann['image_id']!r} is not in 'images'")
    if "category_id" in ann and ann["category_id"] not in cat_ids:
        out.append(
            f"{where}: category_id {ann['category_id']!r} is not in 'categories' ({sorted(cat_ids, key=str)})"
        )
    box = ann.get("bbox")
    if "bbox" in ann and not (isinstance(box, list) and len(box) == 4 and all(_is_number(v) for v in box)):
        out.append(f"{where}: 'bbox' must be [x, y, width, height], got {box!r}")
    elif "bbox" in ann and (box[2] < 0 or box[3] < 0):
        out.append(f"{where}: 'bbox' has a negative width or height: {box!r}")
    return out


def coco_problems(data: Mapping) -> list[str]:
    """Every problem of a COCO detection dict that would otherwise surface as a bare
    KeyError or a silently lost image, each naming the image/annotation id."""
    problems: list[str] = []
    image_ids = _image_problems(_dict_entries(data, "images", problems), problems)
    cats = _dict_entries(data, "categories", problems)
    cat_ids = {c["id"] for c in cats if "id" in c}
    problems += [
        f"categories[{i}]: no '{k}'" for i, c in enumerate(cats) for k in ("id", "name") if k not in c
    ]
    if len(cat_ids) != len([c for c in cats if "id" in c]):
        problems.append("duplicate category ids in 'categories'")
    for i, ann in enumerate(_dict_entries(data, "annotations", problems)):
        problems += _annotation_problems(ann, i, image_ids, cat_ids)
    return problems


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
    problems = coco_problems(data)
    if problems:
        more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
        raise ValueError(f"{path}: {problems[0]}{more}")
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
        labels_from_category_ids: label = category id - 1, gaps kept (labels 0..max id - 1,
            unused ones named "N/A"), as torchvision's COCO detectors predict (their 91-way
            classifier is background + ids 1..90); default: contiguous labels.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        ann_file: str | os.PathLike,
        transforms: Mapping | Callable | None = None,
        filter_empty: bool = False,
        labels_from_category_ids: bool = False,
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"{self.root}: COCO image folder not found")
        self.ann_file = Path(ann_file)
        self.coco = load_coco(ann_file)
        self.transforms = build(transforms, TRANSFORMS) if isinstance(transforms, Mapping) else transforms
        cat_ids = sorted(self.coco.cats)
        if labels_from_category_ids:
            if cat_ids and min(cat_ids) < 1:
                raise ValueError(f"{self.ann_file}: labels_from_category_ids needs category ids >= 1")
            cat_ids = list(range(1, max(cat_ids, default=0) + 1))
        self.label_to_category_id: list[int] = cat_ids
        self.category_id_to_label = {c: i for i, c in enumerate(cat_ids)}
        self.class_names: list[str] = [self.coco.cats.get(c, {}).get("name", "N/A") for c in cat_ids]
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
