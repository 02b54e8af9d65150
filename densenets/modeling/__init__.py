"""Models. Importing this package registers every backbone, neck, head and meta-architecture."""

from . import backbones, detection, necks, segmentation, super_resolution  # noqa: F401
