"""The 80 COCO detection categories: names and dataset category ids.

Converted COCO checkpoints carry these (`tools/convert_checkpoint.py`), so a detector
loaded from one names its classes without the COCO annotation files.
"""

from __future__ import annotations

__all__ = ["COCO_CATEGORY_IDS", "COCO_CLASS_NAMES", "coco_metadata"]

# In increasing category id order: label k of an 80-class COCO model is COCO_CLASS_NAMES[k].
COCO_CLASS_NAMES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat",
    "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack",
    "umbrella", "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball",
    "kite", "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket",
    "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair",
    "couch", "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse",
    "remote", "keyboard", "cell phone", "microwave", "oven", "toaster", "sink",
    "refrigerator", "book", "clock", "vase", "scissors", "teddy bear", "hair drier",
    "toothbrush",
)  # fmt: skip

# The ids 1..90 that COCO detection uses (ten are unused), in increasing order.
COCO_CATEGORY_IDS = tuple(i for i in range(1, 91) if i not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83))


def coco_metadata(with_gaps: bool = False) -> dict[str, list]:
    """`{"class_names", "category_ids"}` of a COCO detector.

    Args:
        with_gaps: labels are the category ids 1..90 minus one, unused ids included (as
            torchvision's detectors, whose label j is category id j); unused ids are
            named "N/A". Else the 80 contiguous labels of detectron2, mmdet and DETR.
    """
    if not with_gaps:
        return {"class_names": list(COCO_CLASS_NAMES), "category_ids": list(COCO_CATEGORY_IDS)}
    name_of = dict(zip(COCO_CATEGORY_IDS, COCO_CLASS_NAMES))
    return {"class_names": [name_of.get(i, "N/A") for i in range(1, 91)], "category_ids": list(range(1, 91))}
