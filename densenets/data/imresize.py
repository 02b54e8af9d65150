"""MATLAB-compatible bicubic `imresize`.

The standard super-resolution benchmarks (Set5, Set14, B100, Urban100, DIV2K) made
their low-resolution images with MATLAB's ``imresize(hr, 1/s, 'bicubic')``. Other
bicubic resizers (OpenCV, PIL, torch) differ from it in the cubic coefficient, the
antialiasing or the border rule, and a model trained on one kind of LR image loses
tenths of a dB on the other. This module reproduces MATLAB's algorithm:

* Keys' cubic kernel with a = -0.5 and support 2 (Keys, 1981).
* When shrinking (scale < 1) with antialiasing, the kernel is stretched to
  ``scale * cubic(scale * x)`` with support ``2 / scale``: a low-pass filter and the
  interpolation in one step.
* Output pixel ``x`` (1-based) samples input position ``u = x / scale + (1 - 1 / scale) / 2``
  (pixel centres aligned), from ``ceil(kernel_width) + 2`` taps starting at
  ``floor(u - kernel_width / 2)``; each row of weights is normalised to sum to 1.
* Out-of-range taps are mirrored half-sample symmetrically (index -1 reads pixel 0).
* The output size is ``ceil(in_size * scale)``; the dimension with the smaller scale
  is resized first (rows first on a tie), one dimension at a time.
* An integer image stays integer after *each* dimension (rounded half away from zero
  and saturated), as MATLAB's resizing kernel returns the input's class.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["imresize", "cubic", "contributions"]


def cubic(x: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with a = -0.5 (MATLAB's ``cubic``).

    Args:
        x: distances in input pixels, any shape.

    Returns:
        Kernel values, same shape, float64; zero for ``|x| > 2``.
    """
    ax = np.abs(np.asarray(x, dtype=np.float64))
    ax2, ax3 = ax * ax, ax * ax * ax
    near = (1.5 * ax3 - 2.5 * ax2 + 1.0) * (ax <= 1)
    far = (-0.5 * ax3 + 2.5 * ax2 - 4.0 * ax + 2.0) * ((ax > 1) & (ax <= 2))
    return near + far


def contributions(
    in_length: int, out_length: int, scale: float, antialiasing: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Taps of a 1-D MATLAB bicubic resize.

    Args:
        in_length: input length along the dimension.
        out_length: output length along the dimension.
        scale: output / input scale factor (as given, not recomputed from lengths).
        antialiasing: widen the kernel when shrinking.

    Returns:
        weights: float64 [out_length, P], each row sums to 1.
        indices: int64 [out_length, P], 0-based input indices after symmetric mirroring.
    """
    if scale < 1 and antialiasing:
        kernel_width = 4.0 / scale

        def kernel(d: np.ndarray) -> np.ndarray:
            return scale * cubic(scale * d)
    else:
        kernel_width = 4.0
        kernel = cubic
    x = np.arange(1, out_length + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)  # input position of output pixel x, 1-based
    left = np.floor(u - kernel_width / 2)
    taps = math.ceil(kernel_width) + 2
    indices = left[:, None] + np.arange(taps)[None, :]  # (out, P), 1-based
    weights = kernel(u[:, None] - indices)
    weights = weights / weights.sum(axis=1, keepdims=True)
    # Half-sample symmetric mirroring: 1..n, n..1, repeated.
    mirror = np.concatenate([np.arange(in_length), np.arange(in_length - 1, -1, -1)])
    indices = mirror[np.mod(indices.astype(np.int64) - 1, 2 * in_length)]
    keep = np.any(weights != 0, axis=0)  # drop all-zero tap columns, as MATLAB does
    return weights[:, keep], indices[:, keep]


def _round_like(x: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Float -> integer dtype as MATLAB converts: round half away from zero, saturate."""
    info = np.iinfo(dtype)
    return np.clip(np.floor(np.abs(x) + 0.5) * np.sign(x), info.min, info.max).astype(dtype)


def _resize_dim(img: np.ndarray, axis: int, weights: np.ndarray, indices: np.ndarray) -> np.ndarray:
    src = np.moveaxis(img, axis, 0).astype(np.float64, copy=False)
    out = np.zeros((weights.shape[0], *src.shape[1:]), dtype=np.float64)
    extra = (slice(None),) + (None,) * (src.ndim - 1)
    for k in range(weights.shape[1]):
        out += weights[:, k][extra] * src[indices[:, k]]
    out = np.moveaxis(out, 0, axis)
    if np.issubdtype(img.dtype, np.integer):
        return _round_like(out, img.dtype)
    return out.astype(img.dtype if np.issubdtype(img.dtype, np.floating) else np.float64)


def imresize(
    img: np.ndarray,
    scale: float | None = None,
    output_shape: tuple[int, int] | None = None,
    antialiasing: bool = True,
) -> np.ndarray:
    """Resize like MATLAB's ``imresize(img, scale, 'bicubic')``.

    Args:
        img: np.ndarray [H, W] or [H, W, C]; uint8/uint16 (the result keeps the dtype,
            rounded after each dimension) or float (computed in float64, returned in
            the input's float dtype, not clipped).
        scale: one factor for both dimensions, e.g. ``1 / 4`` or ``2``.
        output_shape: (H_out, W_out) instead of `scale`; the per-dimension scale is
            then ``out / in``.
        antialiasing: widen the kernel when shrinking (MATLAB's default: on).

    Returns:
        The resized image, [H_out, W_out] or [H_out, W_out, C].
    """
    if img.ndim not in (2, 3):
        raise ValueError(f"imresize: expected an [H, W] or [H, W, C] array, got shape {tuple(img.shape)}")
    if (scale is None) == (output_shape is None):
        raise ValueError("imresize: give exactly one of scale and output_shape")
    in_shape = img.shape[:2]
    if scale is not None:
        if scale <= 0:
            raise ValueError(f"imresize: scale must be positive, got {scale}")
        scales = (float(scale), float(scale))
        out_shape = tuple(math.ceil(n * scales[0]) for n in in_shape)
    else:
        out_shape = tuple(int(n) for n in output_shape)
        if min(out_shape) <= 0:
            raise ValueError(f"imresize: output_shape must be positive, got {output_shape}")
        scales = (out_shape[0] / in_shape[0], out_shape[1] / in_shape[1])
    out = img
    for axis in sorted((0, 1), key=lambda a: scales[a]):  # stable: rows first on a tie
        weights, indices = contributions(in_shape[axis], out_shape[axis], scales[axis], antialiasing)
        out = _resize_dim(out, axis, weights, indices)
    return out
