"""Evaluators: COCO detection, semantic segmentation, super-resolution."""

from .base import DatasetEvaluator

__all__ = ["DatasetEvaluator"]
