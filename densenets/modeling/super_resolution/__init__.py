"""Super-resolution: the EDSR meta-architecture, its upsampler and inference helpers."""

from .edsr import EDSR
from .inference import self_ensemble, tile_bounds, tiled_forward
from .upsampler import PixelShuffleUpsampler

__all__ = ["EDSR", "PixelShuffleUpsampler", "self_ensemble", "tile_bounds", "tiled_forward"]
