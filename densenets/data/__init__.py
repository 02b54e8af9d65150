"""Datasets, transforms and loaders. Importing this package registers them."""

from .cityscapes import Cityscapes
from .coco import COCODetection
from .detection_transforms import DetectionTransform
from .imresize import imresize
from .io import IMAGE_EXTENSIONS, ImageReadError, read_image, read_label, write_image
from .segmentation_transforms import SemSegTestTransform, SemSegTrainTransform
from .sr import DIV2K, SRBenchmark, SRImageFolder, SRPairs
from .sr_transforms import SRRandomCrop, SRRandomFlipRotate

__all__ = [
    "COCODetection",
    "DetectionTransform",
    "imresize",
    "IMAGE_EXTENSIONS",
    "ImageReadError",
    "read_image",
    "read_label",
    "write_image",
    "Cityscapes",
    "SemSegTrainTransform",
    "SemSegTestTransform",
    "SRPairs",
    "DIV2K",
    "SRBenchmark",
    "SRImageFolder",
    "SRRandomCrop",
    "SRRandomFlipRotate",
]
