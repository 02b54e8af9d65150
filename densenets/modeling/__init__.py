"""Models. Importing this package registers every backbone, neck, head and meta-architecture."""

import densenets._torchvision_check  # noqa: F401  (first: one clear line when torch and torchvision do not match)

from . import backbones, detection, necks, segmentation, super_resolution  # noqa: F401
