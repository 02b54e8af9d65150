"""Small shared building blocks: norms, shapes, padded batches."""

from .image_list import ImageList
from .norm import FrozenBatchNorm2d, LayerNorm2d, freeze_batchnorm, get_norm
from .shape_spec import ShapeSpec

__all__ = ["ImageList", "ShapeSpec", "FrozenBatchNorm2d", "LayerNorm2d", "get_norm", "freeze_batchnorm"]
