"""Datasets, transforms and loaders. Importing this package registers them."""

from .imresize import imresize
from .io import IMAGE_EXTENSIONS, ImageReadError, read_image, read_label, write_image

__all__ = ["imresize", "IMAGE_EXTENSIONS", "ImageReadError", "read_image", "read_label", "write_image"]
