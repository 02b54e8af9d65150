"""Datasets, transforms and loaders. Importing this package registers them."""

from .io import IMAGE_EXTENSIONS, ImageReadError, read_image, read_label, write_image

__all__ = ["IMAGE_EXTENSIONS", "ImageReadError", "read_image", "read_label", "write_image"]
