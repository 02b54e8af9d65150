"""Backbones. Importing this package registers them in BACKBONES."""

from . import edsr, resnet  # noqa: F401
from .base import Backbone, check_in_features
from .resnet import PRESETS, BasicBlock, Bottleneck, ResNet, ResNetStem, conv3x3_class
from .weights import load_pretrained_weights, load_weights, resolve_weights

__all__ = [
    "Backbone",
    "check_in_features",
    "ResNet",
    "ResNetStem",
    "BasicBlock",
    "Bottleneck",
    "conv3x3_class",
    "PRESETS",
    "load_weights",
    "load_pretrained_weights",
    "resolve_weights",
]
