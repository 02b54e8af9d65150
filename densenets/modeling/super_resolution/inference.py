"""Inference helpers for image-to-image models: tiled ("chop") inference and the x8
geometric self-ensemble of EDSR+ (Lim et al., 2017, Sec. 4.3).

Both wrap any function `fn(x: Tensor[N, C, h, w]) -> Tensor[N, C', s*h, s*w]`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

__all__ = ["tile_bounds", "tiled_forward", "self_ensemble"]

ImageFn = Callable[[torch.Tensor], torch.Tensor]


def tile_bounds(length: int, tile_size: int) -> list[tuple[int, int]]:
    """Split ``[0, length)`` into ceil(length / tile_size) near-equal [start, end) cores."""
    n = max(1, math.ceil(length / tile_size))
    edges = [round(i * length / n) for i in range(n + 1)]
    return list(zip(edges[:-1], edges[1:]))


def tiled_forward(fn: ImageFn, x: torch.Tensor, scale: int, tile_size: int | None, overlap: int = 16) -> torch.Tensor:
    """Run `fn` on overlapping tiles and stitch the outputs.

    The input is cut into cores of at most `tile_size` pixels; each core is run with
    `overlap` pixels of real context on every side (less at the image border, where
    whole-image inference has none either) and only the core's part of the output is
    kept. When `fn`'s receptive field reaches at most `overlap` input pixels, every
    output pixel sees exactly what it sees in whole-image inference.

    Args:
        fn: the model, low-resolution -> `scale` times larger.
        x (Tensor[N, C, h, w]): input.
        scale: output pixels per input pixel.
        tile_size: largest core side in input pixels; None runs `fn(x)` whole.
        overlap: context in input pixels around each core.

    Returns:
        Tensor[N, C', scale * h, scale * w].
    """
    h, w = x.shape[-2:]
    if tile_size is None or (h <= tile_size and w <= tile_size):
        return fn(x)
    out = None
    s = scale
    for y0, y1 in tile_bounds(h, tile_size):
        for x0, x1 in tile_bounds(w, tile_size):
            cy0, cx0 = max(y0 - overlap, 0), max(x0 - overlap, 0)
            cy1, cx1 = min(y1 + overlap, h), min(x1 + overlap, w)
            y = fn(x[..., cy0:cy1, cx0:cx1])
            if out is None:
                out = y.new_empty((*y.shape[:-2], s * h, s * w))
            oy, ox = (y0 - cy0) * s, (x0 - cx0) * s
            out[..., s * y0 : s * y1, s * x0 : s * x1] = y[..., oy : oy + s * (y1 - y0), ox : ox + s * (x1 - x0)]
    return out


def self_ensemble(fn: ImageFn, x: torch.Tensor) -> torch.Tensor:
    """Average `fn` over the 8 rotations/flips of the input, each undone on the output.

    The result is equivariant to the dihedral group for any `fn`, and equals `fn(x)`
    when `fn` already is (up to float rounding of the mean).

    Args:
        fn: the model.
        x (Tensor[N, C, h, w]): input.

    Returns:
        Tensor[N, C', H, W]: the mean of the 8 outputs.
    """
    total = None
    for k in range(4):
        for flip in (False, True):
            t = x.rot90(k, dims=(-2, -1))
            t = t.flip(-1) if flip else t
            y = fn(t)
            y = y.flip(-1) if flip else y
            y = y.rot90(-k, dims=(-2, -1))
            total = y if total is None else total + y
    return total / 8
