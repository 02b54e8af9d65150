"""Datasets, transforms and loaders. Importing this package registers them."""

from .cityscapes import Cityscapes
from .coco import COCODetection
from .detection_transforms import DetectionTransform
from .detr_transforms import DETRTransform
from .image_folder import ImageFolder
from .imresize import imresize
from .io import IMAGE_EXTENSIONS, ImageReadError, read_image, read_label, write_image
from .loader import build_test_loader, build_train_loader, list_collate
from .samplers import GroupedBatchSampler, InferenceSampler, TrainingSampler
from .segmentation_transforms import SemSegTestTransform, SemSegTrainTransform
from .sr import DIV2K, SRBenchmark, SRImageFolder, SRPairs
from .sr_transforms import SRRandomCrop, SRRandomFlipRotate

__all__ = [
    "COCODetection",
    "DetectionTransform",
    "DETRTransform",
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
    "ImageFolder",
    "build_train_loader",
    "build_test_loader",
    "list_collate",
    "TrainingSampler",
    "InferenceSampler",
    "GroupedBatchSampler",
]
