"""Evaluators: COCO detection, semantic segmentation, super-resolution."""

from .base import DatasetEvaluator
from .coco import COCOEvaluator
from .sem_seg import SemSegEvaluator

__all__ = [
    "DatasetEvaluator",
    "COCOEvaluator",
    "SemSegEvaluator",
]
