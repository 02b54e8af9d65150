"""Seeding of augmentation pipelines from the training stream.

Random augmentation must come from the seeded, resumable stream (`data/loader.py`):
before each training item is read, the loader seeds python's, numpy's and torch's
global generators and calls `seed_transforms(dataset, seed)`, which reaches every
transform that keeps its own generator:

* an object with `set_random_seed(seed)` (every densenets transform that owns a
  generator, an Albumentations `Compose`) is seeded and not looked into further;
* a list or tuple: each element, with its own seed;
* any other object: its `transforms` attribute (datasets hold their pipeline there).

Transforms without `set_random_seed` must draw from the global generators.

Albumentations' own `set_random_seed` gives every child transform the *same* seed, so
each child's first draw is the same number (a flip decided together with the colour
jitter). `seed_albumentations` gives each child a seed of its own.
"""

from __future__ import annotations

from typing import Any

__all__ = ["seed_transforms", "seed_albumentations", "derive_seed"]


def derive_seed(seed: int, index: int) -> int:
    """A 32-bit seed for child `index` of something seeded with `seed`."""
    x = (seed * 0x9E3779B1 + (index + 1) * 0x85EBCA77) % 2**64
    x ^= x >> 31
    return (x * 0xBF58476D1CE4E5B9 % 2**64 >> 32) % 2**32


def seed_albumentations(transform: Any, seed: int) -> None:
    """Seed an Albumentations transform or composition, each nested child differently."""
    transform.set_random_seed(seed)
    for i, child in enumerate(getattr(transform, "transforms", None) or []):
        if hasattr(child, "set_random_seed"):
            seed_albumentations(child, derive_seed(seed, i))


def seed_transforms(obj: Any, seed: int, _depth: int = 0) -> int:
    """Seed every generator-owning transform reachable from `obj` (see the module doc).

    Returns:
        How many `set_random_seed` calls were made.
    """
    if obj is None or _depth > 4:
        return 0
    fn = getattr(obj, "set_random_seed", None)
    if callable(fn):
        fn(seed)
        return 1
    if isinstance(obj, (list, tuple)):
        return sum(seed_transforms(o, derive_seed(seed, i), _depth + 1) for i, o in enumerate(obj))
    inner = getattr(obj, "transforms", None)
    return seed_transforms(inner, seed, _depth + 1) if inner is not obj else 0
