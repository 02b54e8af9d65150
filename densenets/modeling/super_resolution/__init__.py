"""Super-resolution: the EDSR meta-architecture, its upsampler and inference helpers."""

from .edsr import DIV2K_RGB_MEAN, EDSR
from .inference import self_ensemble, tile_bounds, tiled_forward
from .upsampler import PixelShuffleUpsampler

__all__ = ["EDSR", "DIV2K_RGB_MEAN", "PixelShuffleUpsampler", "self_ensemble", "tile_bounds", "tiled_forward"]
