"""Backbones. Importing this package registers them in BACKBONES."""

from . import edsr, resnet  # noqa: F401
from .resnet import PRESETS, BasicBlock, Bottleneck, ResNet, ResNetStem

__all__ = [
    "ResNet",
    "ResNetStem",
    "BasicBlock",
    "Bottleneck",
    "PRESETS",
]
