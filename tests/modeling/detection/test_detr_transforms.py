"""DETRTransform: DETR's multi-scale resize, random crop and flip keep boxes consistent."""

import numpy as np
import pytest

from densenets.config import TRANSFORMS, build
from densenets.data.detr_transforms import DETR_SCALES, DETRTransform, RandomSizeCrop


def _item():
    image = np.zeros((480, 640, 3), np.uint8)
    image[10:100, 10:100] = 255  # box 0 is a white square
    boxes = np.array([[10, 10, 100, 100], [300, 200, 630, 470]], np.float32)
    return {"image": image, "instances": {"boxes": boxes, "labels": np.array([0, 2])}}


def test_resize_only_branch_uses_detr_scales():
    t = DETRTransform(crop_prob=0.0, flip_prob=0.0, seed=0)
    seen = set()
    for _ in range(12):
        out = t(_item())
        h, w = out["image"].shape[:2]
        seen.add(min(h, w))
        assert max(h, w) <= 1333
        scale = h / 480
        np.testing.assert_allclose(
            out["instances"]["boxes"][0], np.array([10, 10, 100, 100]) * scale, rtol=0.02
        )
    assert seen <= set(DETR_SCALES) and len(seen) > 3


def test_crop_branch_keeps_boxes_inside_and_labels_aligned():
    # DETR's recipe at half size, to keep the test fast.
    t = DETRTransform(
        (240, 272, 304), 667, crop_prob=1.0, crop_resize=(200, 250, 300), crop_size=(96, 150), seed=1
    )
    dropped = 0
    for _ in range(25):
        out = t(_item())
        h, w = out["image"].shape[:2]
        boxes, labels = out["instances"]["boxes"], out["instances"]["labels"]
        assert len(boxes) == len(labels)
        assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
        assert (
            (boxes >= 0).all()
            and (boxes[:, [0, 2]] <= w + 1e-3).all()
            and (boxes[:, [1, 3]] <= h + 1e-3).all()
        )
        dropped += 2 - len(boxes)
        for box, label in zip(boxes, labels):
            if label == 0:  # the white square stays white under its box
                x0, y0, x1, y1 = np.round(box).astype(int)
                assert out["image"][y0 + 1 : y1 - 1, x0 + 1 : x1 - 1].mean() > 200
    assert dropped > 0  # some crops miss a box entirely


def test_random_size_crop_sizes():
    crop = RandomSizeCrop(384, 600)
    crop.set_random_seed(0)
    for _ in range(20):
        x0, y0, x1, y1 = crop.get_params_dependent_on_data({"shape": (500, 700)}, {})["crop_coords"]
        assert 384 <= y1 - y0 <= 500 and 384 <= x1 - x0 <= 600 and y1 <= 500 and x1 <= 700
    with pytest.raises(ValueError, match="min_size"):
        RandomSizeCrop(600, 384)


def test_registered_and_seeded():
    t1 = build({"type": "DETRTransform", "seed": 3}, TRANSFORMS)
    t2 = build({"type": "DETRTransform", "seed": 3}, TRANSFORMS)
    a, b = t1(_item()), t2(_item())
    assert a["image"].shape == b["image"].shape
    np.testing.assert_array_equal(a["instances"]["boxes"], b["instances"]["boxes"])
