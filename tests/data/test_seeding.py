"""Every registered transform draws its randomness from the loader's seeded stream:
seeded the same way it gives the same output, seeded differently it varies, and
Albumentations children do not share one random sequence."""

from __future__ import annotations

import numpy as np
import pytest

from densenets.config import TRANSFORMS
from densenets.data.loader import _PositionSeeded
from densenets.data.seeding import seed_transforms
from densenets.data.sr import TransformList

RANDOM = {
    "DetectionTransform": dict(
        min_size=[24, 32, 40],
        max_size=64,
        flip_prob=0.5,
        color_jitter={"brightness": 0.3, "contrast": 0.3, "saturation": 0.3, "hue": 0.05},
    ),
    "DETRTransform": dict(scales=[24, 32, 40], max_size=64, crop_resize=[32, 40], crop_size=[16, 24]),
    "SemSegTrainTransform": dict(crop_size=[16, 24], ratio_range=[0.75, 1.5]),
    "SRRandomCrop": dict(patch_size=8),
    "SRRandomFlipRotate": dict(),
}
DETERMINISTIC = {"SemSegTestTransform"}


def _item(name: str) -> dict:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (32, 48, 3), dtype=np.uint8)
    if name.startswith("SR"):
        return {"lr": image[:16, :24].copy(), "hr": image.copy()}
    if name.startswith("SemSeg"):
        return {"image": image, "sem_seg": rng.integers(0, 4, (32, 48)).astype(np.uint8)}
    boxes = np.array([[2, 3, 20, 30], [10, 5, 40, 28]], np.float32)
    return {"image": image, "instances": {"boxes": boxes, "labels": np.array([0, 1])}}


class _Dataset:
    """What the training loader sees: a dataset holding its pipeline in `transforms`."""

    def __init__(self, transforms, item):
        self.transforms, self.item = transforms, item

    def __len__(self):
        return 1

    def __getitem__(self, index):
        out = self.transforms(
            {k: (dict(v) if isinstance(v, dict) else v.copy()) for k, v in self.item.items()}
        )
        return np.concatenate(
            [
                np.asarray(v, np.float64).ravel()
                if not isinstance(v, dict)
                else np.concatenate([np.asarray(x, np.float64).ravel() for x in v.values()])
                for v in out.values()
            ]
        )


def test_every_registered_transform_is_listed_here():
    # The package's transforms (tests register their own small ones in the same registry).
    ours = {name for name in TRANSFORMS if TRANSFORMS[name].__module__.startswith("densenets.")}
    assert ours == set(RANDOM) | DETERMINISTIC


@pytest.mark.parametrize("name", sorted(RANDOM))
def test_the_stream_position_decides_the_augmentation(name):
    transform = TRANSFORMS[name](**RANDOM[name])
    data = _PositionSeeded(_Dataset(TransformList([transform]), _item(name)), seed=7)
    runs = [[data[(pos, 0)] for pos in range(12)] for _ in range(2)]
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a, b)
    distinct = {r.tobytes() for r in runs[0]}
    assert len(distinct) > 3, f"{name}: {len(distinct)} distinct outputs for 12 positions"


def test_albumentations_children_get_their_own_seeds():
    # Albumentations seeds every child with the same number, so a flip with p=0.5 and a
    # colour jitter with p=0.5 would always be decided together.
    transform = TRANSFORMS["DetectionTransform"](
        min_size=32, max_size=64, flip_prob=0.5, color_jitter={"brightness": 0.5, "p": 0.5}
    )
    flip, jitter = transform.pipeline.transforms[1], transform.pipeline.transforms[2]
    decisions = []
    for seed in range(64):
        seed_transforms(transform, seed)
        decisions.append((flip.py_random.random() < 0.5, jitter.py_random.random() < 0.5))
    assert 8 < sum(a != b for a, b in decisions) < 56
