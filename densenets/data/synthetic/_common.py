"""What the synthetic generators share: per-image random streams, textures, file writing
and the `generated.json` stamp that lets an identical dataset be recognised and kept."""

from __future__ import annotations

import hashlib
import inspect
import json
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

_SPLIT_CODES = {"train": 0, "val": 1, "test": 2}
STAMP_FILE = "generated.json"


def describe(generator: Callable[..., dict], **kwargs) -> dict:
    """What `{root}/generated.json` holds after `generator(root, **kwargs)`: the
    generator's name, every argument (defaults filled in) and a digest of its code (its
    module and this one), so that an identical dataset can be recognised and kept.

    Args:
        generator: one of the generator functions (`make_shapes`, `make_shapes_city`,
            `make_sr_set`).
        **kwargs: its arguments but `root`.
    """
    bound = inspect.signature(generator).bind(None, **kwargs)
    bound.apply_defaults()
    args = {k: v for k, v in bound.arguments.items() if k != "root"}
    digest = hashlib.sha256(Path(__file__).read_bytes())
    digest.update(Path(inspect.getfile(generator)).read_bytes())
    code = digest.hexdigest()[:16]
    return json.loads(json.dumps({"generator": generator.__name__, "kwargs": args, "code": code}))


def write_stamp(root: Path, generator: Callable[..., dict], kwargs: dict) -> None:
    """Write `describe(generator, **kwargs)` to `root/generated.json`."""
    (root / STAMP_FILE).write_text(json.dumps(describe(generator, **kwargs), indent=2) + "\n")


def image_rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, _SPLIT_CODES[split], index])


def size_hw(image_size: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(image_size, int):
        return image_size, image_size
    h, w = image_size
    return int(h), int(w)


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cell: int, channels: int = 1) -> np.ndarray:
    """Value noise in [0, 1]: a coarse random grid upsampled bicubically, float32 (H, W, C)."""
    gh, gw = max(2, h // cell + 2), max(2, w // cell + 2)
    grid = rng.random((gh, gw, channels), dtype=np.float32)
    up = cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)
    return np.clip(up.reshape(h, w, channels), 0.0, 1.0)


def texture(rng: np.random.Generator, h: int, w: int, base: np.ndarray, amount: float) -> np.ndarray:
    """A colour field around `base` (3,) with blotches and grain, float32 (H, W, 3) in 0-255."""
    blotch = _smooth_noise(rng, h, w, cell=int(rng.integers(8, 48)), channels=3) - 0.5
    grain = rng.standard_normal((h, w, 3), dtype=np.float32) * 0.15
    return base[None, None, :] + amount * (blotch + grain)


def padded_rect(mask: np.ndarray, pad: int) -> tuple[int, int, int, int]:
    """(x, y, w, h) of the mask's bounding box grown by `pad`, clipped to the image."""
    x, y, w, h = cv2.boundingRect(mask.astype(np.uint8))
    x0, y0 = max(x - pad, 0), max(y - pad, 0)
    x1, y1 = min(x + w + pad, mask.shape[1]), min(y + h + pad, mask.shape[0])
    return x0, y0, x1 - x0, y1 - y0


def to_uint8(img: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def write_json(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        json.dump(obj, f, separators=(",", ":"))
