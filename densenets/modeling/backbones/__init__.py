"""Backbones. Importing this package registers them in BACKBONES."""

from . import edsr, resnet  # noqa: F401
from .base import Backbone, check_in_features
from .resnet import PRESETS, BasicBlock, Bottleneck, ResNet, ResNetStem, conv3x3_class

__all__ = [
    "Backbone",
    "check_in_features",
    "ResNet",
    "ResNetStem",
    "BasicBlock",
    "Bottleneck",
    "conv3x3_class",
    "PRESETS",
]
