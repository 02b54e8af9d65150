"""Evaluators: COCO detection, semantic segmentation, super-resolution."""

from .base import DatasetEvaluator
from .coco import COCOEvaluator

__all__ = ["DatasetEvaluator", "COCOEvaluator"]
