"""Deterministic synthetic datasets in the real datasets' layouts, generated from a seed.

Three generators (one module each) write small datasets that the loaders, learning tests and `make demo`
read exactly like the real ones:

* `make_shapes`: filled circles, squares and triangles on textured backgrounds, in COCO
  layout (`train2017/`, `val2017/`, `annotations/instances_*.json`). Category ids are
  1, 3, 5 (not contiguous) so the id <-> label mapping is exercised.
* `make_shapes_city`: street-like scenes in the official Cityscapes layout with real
  Cityscapes label ids, including ids that map to the ignore label.
* `make_sr_set`: crops of `skimage.data` photos in DIV2K layout with bicubic LR images,
  plus held-out photos as a validation split and a benchmark-style folder.

Every image is drawn from its own random stream `(seed, split, index)`, so the same
seed gives byte-identical files, and image `i` does not depend on how many were asked for.
"""

from ._common import STAMP_FILE, describe
from .shapes import SHAPES_CATEGORIES, make_shapes
from .shapes_city import CITY_IGNORED_LABEL_IDS, CITY_LABEL_IDS, make_shapes_city
from .sr_photos import SR_TRAIN_PHOTOS, SR_VALID_PHOTOS, make_sr_set

__all__ = [
    "SHAPES_CATEGORIES",
    "CITY_LABEL_IDS",
    "CITY_IGNORED_LABEL_IDS",
    "SR_TRAIN_PHOTOS",
    "SR_VALID_PHOTOS",
    "make_shapes",
    "make_shapes_city",
    "make_sr_set",
    "STAMP_FILE",
    "describe",
]
