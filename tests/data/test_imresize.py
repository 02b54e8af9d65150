"""MATLAB-compatible bicubic imresize.

Verified here without MATLAB: the kernel and its exact tap weights (dyadic rationals
derived by hand from Keys' a = -0.5 cubic), the antialiasing stretch, the half-sample
symmetric border, the output size rule, hand-computed outputs on a step edge, and
parity with torch's antialiased bicubic (the same kernel family) away from borders.
Not verified here: bit-exact agreement with a MATLAB-made file (needs MATLAB output).
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage import data

from densenets.data.imresize import contributions, cubic, imresize

# Keys' cubic, a = -0.5, at the eight distances 3.5 ... -3.5 of a 1/2 downscale (kernel
# stretched by 2 and scaled by 1/2): 0.5 * cubic(d / 2).
HALF = np.array([-3, -9, 29, 111, 111, 29, -9, -3]) / 256.0


def test_cubic_kernel_values():
    d = np.array([0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.5])
    # 1.5|x|^3 - 2.5|x|^2 + 1 on [0, 1]; -0.5|x|^3 + 2.5|x|^2 - 4|x| + 2 on (1, 2]
    expected = [1.0, 222 / 256, 0.5625, 58 / 256, 0.0, -18 / 256, -0.0625, -6 / 256, 0.0, 0.0]
    np.testing.assert_array_equal(cubic(d), expected)
    np.testing.assert_array_equal(cubic(-d), expected)


def test_downscale_x2_taps_and_symmetric_border():
    w, idx = contributions(8, 4, 0.5)
    # Antialiasing widens the kernel to 8 taps (the two all-zero columns of the
    # ceil(8) + 2 = 10 candidates are dropped); every row has the same weights.
    assert w.shape == (4, 8)
    np.testing.assert_array_equal(w, np.tile(HALF, (4, 1)))
    # Output pixel 1 sits at input 1.5 (1-based): taps 1-based -2..5, mirrored so that
    # 0 -> 1, -1 -> 2, -2 -> 3; 0-based below.
    np.testing.assert_array_equal(idx[0], [2, 1, 0, 0, 1, 2, 3, 4])
    np.testing.assert_array_equal(idx[3], [3, 4, 5, 6, 7, 7, 6, 5])


def test_upscale_x2_taps_no_antialias_widening():
    w, idx = contributions(4, 8, 2.0)
    assert w.shape == (8, 4)  # plain 4-tap kernel when enlarging
    # Output pixel 1 sits at input 0.75: distances 1.75, 0.75, -0.25, -1.25.
    np.testing.assert_array_equal(w[0], np.array([-6, 58, 222, -18]) / 256.0)
    np.testing.assert_array_equal(w[1], np.array([-18, 222, 58, -6]) / 256.0)
    np.testing.assert_array_equal(idx[0], [1, 0, 0, 1])


def test_downscale_without_antialiasing_keeps_four_taps():
    w, _ = contributions(8, 4, 0.5, antialiasing=False)
    # Input position 1.5 + 2k: distances 1.5, 0.5, -0.5, -1.5 of the plain kernel.
    np.testing.assert_array_equal(w, np.tile(np.array([-16, 144, 144, -16]) / 256.0, (4, 1)))


def test_step_edge_by_hand():
    step = np.tile(np.array([0, 0, 0, 0, 255, 255, 255, 255], dtype=np.float64), (4, 1))
    out = imresize(step, 0.5)
    # Hand sums of HALF over the mirrored taps (see test above):
    #   x=1: 255 * (-3/256); x=2: 255 * (29 - 9 - 3)/256; x=3: 255 * (111+111+29-9-3)/256;
    #   x=4: 255 * (1 + 3/256) (the mirrored border repeats 255 where a -3/256 tap was).
    expected = 255 * np.array([-3, 17, 239, 259]) / 256.0
    np.testing.assert_allclose(out, np.tile(expected, (2, 1)), rtol=0, atol=1e-12)
    out8 = imresize(step.astype(np.uint8), 0.5)
    assert out8.dtype == np.uint8
    np.testing.assert_array_equal(out8, np.tile([0, 17, 238, 255], (2, 1)))  # rounded, saturated


@pytest.mark.parametrize("shape, scale, expected", [((7, 5), 0.5, (4, 3)), ((9, 10), 1 / 3, (3, 4)),
                                                     ((12, 8), 0.25, (3, 2)), ((5, 6), 3, (15, 18))])
def test_output_size_is_ceil(shape, scale, expected):
    assert imresize(np.zeros(shape, np.uint8), scale).shape == expected


def test_identity_constant_and_channels():
    img = data.astronaut()[::8, ::8]
    np.testing.assert_array_equal(imresize(img, 1.0), img)
    const = np.full((30, 20, 3), 77, np.uint8)
    np.testing.assert_array_equal(imresize(const, 0.25), np.full((8, 5, 3), 77, np.uint8))
    out = imresize(img, 0.5)
    for c in range(3):  # channels are resized independently
        np.testing.assert_array_equal(out[..., c], imresize(img[..., c], 0.5))


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_interior_matches_torch_antialiased_bicubic(scale):
    """torch's antialiased bicubic uses the same a = -0.5 kernel, stretched the same way,
    but renormalises at borders instead of mirroring; away from them both must agree."""
    img = data.camera()[:240, :240].astype(np.float64)
    ours = imresize(img, 1 / scale)
    theirs = F.interpolate(torch.from_numpy(img)[None, None], scale_factor=1 / scale, mode="bicubic",
                           antialias=True, align_corners=False)[0, 0].numpy()
    m = 3  # the kernel reaches 2 LR pixels past each border
    np.testing.assert_allclose(ours[m:-m, m:-m], theirs[m:-m, m:-m], rtol=0, atol=1e-6)


def test_output_shape_and_errors():
    img = np.zeros((10, 20), np.uint8)
    assert imresize(img, output_shape=(5, 7)).shape == (5, 7)
    with pytest.raises(ValueError, match="exactly one"):
        imresize(img)
    with pytest.raises(ValueError, match="shape"):
        imresize(np.zeros((2, 2, 2, 2)), 0.5)
