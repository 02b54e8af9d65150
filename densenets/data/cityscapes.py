"""Cityscapes semantic segmentation (Cordts et al., CVPR 2016) over the official layout.

    <root>/leftImg8bit/{train,val,test}/<city>/<city>_<seq>_<frame>_leftImg8bit.png
    <root>/gtFine/{train,val,test}/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png
                                          ..._gtFine_labelTrainIds.png  (optional, written
                                          by datasets/prepare_cityscapes.py)

The 34 label ids map to the 19 train ids of the benchmark (everything else -> 255);
`label_id_to_train_id` and `train_id_to_label_id` go both ways (the second for files in
the format of the official test server).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from densenets.config import DATASETS, TRANSFORMS, build

from .io import read_image, read_label

__all__ = [
    "CITYSCAPES_CLASSES",
    "CITYSCAPES_PALETTE",
    "CITYSCAPES_LABEL_TO_TRAIN",
    "Cityscapes",
    "label_id_to_train_id",
    "train_id_to_label_id",
]

IGNORE_INDEX = 255

CITYSCAPES_CLASSES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
    "motorcycle", "bicycle",
)  # fmt: skip

# Colours of the official cityscapesScripts label table, by train id.
CITYSCAPES_PALETTE = (
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
    (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
    (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100),
    (0, 80, 100), (0, 0, 230), (119, 11, 32),
)  # fmt: skip

# label id -> train id for the evaluated classes (cityscapesScripts `labels.py`); every
# other id (0-6, 9, 10, 14-16, 18, 29, 30, license plate -1) is ignored.
CITYSCAPES_LABEL_TO_TRAIN = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10,
    24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}  # fmt: skip

_TO_TRAIN = np.full(256, IGNORE_INDEX, dtype=np.uint8)
_TO_LABEL = np.zeros(256, dtype=np.uint8)  # unknown train ids -> 0 ("unlabeled")
for _label, _train in CITYSCAPES_LABEL_TO_TRAIN.items():
    _TO_TRAIN[_label] = _train
    _TO_LABEL[_train] = _label


def label_id_to_train_id(label: np.ndarray) -> np.ndarray:
    """np.ndarray[H, W] of Cityscapes label ids -> uint8 train ids (255 = ignore)."""
    if label.dtype != np.uint8:
        label = np.where((label >= 0) & (label < 256), label, 0).astype(np.uint8)
    return _TO_TRAIN[label]


def train_id_to_label_id(train_ids: np.ndarray) -> np.ndarray:
    """np.ndarray[H, W] of train ids (0..18) -> uint8 label ids, as the test server expects."""
    return _TO_LABEL[np.asarray(train_ids).astype(np.uint8)]


@DATASETS.register()
class Cityscapes(Dataset):
    """Cityscapes fine annotations for semantic segmentation.

    Label files are `*_gtFine_labelTrainIds.png` when they exist for every image
    (written once by `datasets/prepare_cityscapes.py`), else `*_gtFine_labelIds.png`
    mapped to train ids on the fly.

    Item: `image` uint8 Tensor[3, H, W] RGB, `sem_seg` int64 Tensor[H, W] train ids
    (255 = ignore; absent when `with_labels` is false), `image_id` (`<city>_<seq>_<frame>`),
    `file_name`, `orig_size` (H, W) of the file.

    Args:
        root: folder holding `leftImg8bit/` and `gtFine/`.
        split: `train`, `val` or `test`.
        transforms: called on the numpy item (`image` HWC uint8 RGB, `sem_seg` HW uint8)
            before tensor conversion; a callable or a `TRANSFORMS` config dict.
        with_labels: read the ground truth (the test split's is empty; set false there).
    """

    # Metadata the evaluator and visualisers read from the dataset.
    class_names = list(CITYSCAPES_CLASSES)
    palette = CITYSCAPES_PALETTE
    ignore_index = IGNORE_INDEX
    train_id_to_label_id = staticmethod(train_id_to_label_id)  # for the test server's files

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        transforms: Callable | Mapping | None = None,
        with_labels: bool = True,
    ) -> None:
        self.root = Path(root)
        self.split = split
        self.with_labels = with_labels
        self.transforms = build(transforms, TRANSFORMS) if isinstance(transforms, Mapping) else transforms
        self.images, self.labels, self.prepared = self._scan()

    def _scan(self) -> tuple[list[Path], list[Path], bool]:
        img_dir = self.root / "leftImg8bit" / self.split
        if not img_dir.is_dir():
            raise FileNotFoundError(f"{img_dir}: not a folder (expected the official Cityscapes layout, see datasets/README.md)")
        images = sorted(img_dir.glob("*/*_leftImg8bit.png"))
        if not images:
            raise FileNotFoundError(f"{img_dir}: no <city>/*_leftImg8bit.png images")
        if not self.with_labels:
            return images, [], False
        gt_dir = self.root / "gtFine" / self.split
        stems = [(p.parent.name, p.name[: -len("_leftImg8bit.png")]) for p in images]
        train_ids = [gt_dir / c / f"{s}_gtFine_labelTrainIds.png" for c, s in stems]
        if all(p.is_file() for p in train_ids):
            return images, train_ids, True
        label_ids = [gt_dir / c / f"{s}_gtFine_labelIds.png" for c, s in stems]
        missing = [p for p in label_ids if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"{missing[0]}: missing label file ({len(missing)} of {len(images)} missing)")
        return images, label_ids, False

    def __len__(self) -> int:
        return len(self.images)

    def image_id(self, index: int) -> str:
        return self.images[index].name[: -len("_leftImg8bit.png")]

    def read_sem_seg(self, index: int) -> np.ndarray:
        """uint8 np.ndarray[H, W] of train ids (255 = ignore) of item `index`."""
        label = read_label(self.labels[index])
        return label.astype(np.uint8) if self.prepared else label_id_to_train_id(label)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image = read_image(self.images[index])
        item: dict[str, Any] = {
            "image": image,
            "image_id": self.image_id(index),
            "file_name": str(self.images[index]),
            "orig_size": image.shape[:2],
        }
        if self.with_labels:
            label = self.read_sem_seg(index)
            if label.shape != image.shape[:2]:
                raise ValueError(f"{self.labels[index]}: label is {label.shape}, image is {image.shape[:2]}")
            item["sem_seg"] = label
        if self.transforms is not None:
            item = self.transforms(item)
        return to_tensors(item)


def to_tensors(item: dict[str, Any]) -> dict[str, Any]:
    """`image` HWC uint8 -> Tensor[3, H, W]; `sem_seg` HW -> int64 Tensor[H, W]."""
    item["image"] = torch.from_numpy(np.ascontiguousarray(item["image"].transpose(2, 0, 1)))
    if "sem_seg" in item:
        item["sem_seg"] = torch.from_numpy(np.ascontiguousarray(item["sem_seg"])).long()
    item["orig_size"] = tuple(int(v) for v in item["orig_size"])
    return item
