"""Models. Importing this package registers every backbone, neck, head and meta-architecture."""

from . import backbones, necks  # noqa: F401
from . import super_resolution  # noqa: F401
from . import segmentation  # noqa: F401
from . import detection  # noqa: F401
