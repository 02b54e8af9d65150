"""Foreign checkpoints -> densenets state dicts, through explicit key maps.

Each model family registers its converters here under a name that
`tools/convert_checkpoint.py --from NAME` accepts.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["CONVERTERS", "register_converter", "convert"]

CONVERTERS: dict[str, Callable[[Any], dict]] = {}


def register_converter(name: str) -> Callable:
    """Decorator: `fn(obj) -> state_dict` converts a loaded foreign checkpoint."""

    def _add(fn: Callable) -> Callable:
        if name in CONVERTERS:
            raise KeyError(f"converter {name!r} is already registered")
        CONVERTERS[name] = fn
        return fn

    return _add


def convert(name: str, obj: Any) -> dict:
    """Convert `obj` (a loaded checkpoint) with the converter registered as `name`."""
    if name not in CONVERTERS:
        raise KeyError(f"unknown checkpoint format {name!r} (one of {', '.join(sorted(CONVERTERS))})")
    return CONVERTERS[name](obj)


# Converters register themselves on import.
from . import deformable_detr, detection, detr, dino, edsr, mmdet, mmseg, resnet, segmentation  # noqa: E402, F401
