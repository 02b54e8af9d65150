"""Evaluators: COCO detection, semantic segmentation, super-resolution."""

from .base import DatasetEvaluator
from .coco import COCOEvaluator
from .sem_seg import SemSegEvaluator
from .sr import SRMetrics

__all__ = [
    "DatasetEvaluator",
    "COCOEvaluator",
    "SemSegEvaluator",
    "SRMetrics",
]
