"""Small shared building blocks: norms, shapes, padded batches."""

from .conv import ConvNormAct, conv_norm_act, frozen_affine, get_activation
from .drop_path import DropPath, drop_path
from .image_list import ImageList
from .norm import FrozenBatchNorm2d, LayerNorm2d, freeze_batchnorm, get_norm
from .position_encoding import PositionEmbeddingSine, sine_box_embedding
from .shape_spec import ShapeSpec

__all__ = [
    "ConvNormAct",
    "conv_norm_act",
    "frozen_affine",
    "get_activation",
    "DropPath",
    "drop_path",
    "ImageList",
    "ShapeSpec",
    "FrozenBatchNorm2d",
    "LayerNorm2d",
    "get_norm",
    "freeze_batchnorm",
    "PositionEmbeddingSine",
    "sine_box_embedding",
]
