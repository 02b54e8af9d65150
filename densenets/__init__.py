"""densenets: dense prediction on PyTorch — detection, segmentation, super-resolution.

Subpackages load on first use (``densenets.modeling``, ``from densenets.ops import ...``),
so ``import densenets`` and the tools' ``--help`` import neither torch nor the models.
`register_all()` is the one registration point: it imports every package that registers
components; the tools call it before loading a config, and so must a script that loads
configs or builds from the registries without importing those packages itself. Importing the models or ops first checks, once, that
torchvision's compiled ops load (`densenets._torchvision_check`: a mismatched
torch/torchvision pair is one clear line).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"
_SUBPACKAGES = (
    "checkpoint",
    "config",
    "data",
    "engine",
    "evaluation",
    "export",
    "layers",
    "modeling",
    "ops",
    "utils",
)


def register_all() -> None:
    """Import every package that registers datasets, transforms, models, evaluators and
    visualisers, so that the registries are complete."""
    for name in ("data", "evaluation", "modeling", "utils", "engine"):
        importlib.import_module(f"{__name__}.{name}")
    importlib.import_module(f"{__name__}.config.registry").mark_all_registered()


def __getattr__(name: str) -> Any:
    if name in _SUBPACKAGES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [*_SUBPACKAGES, "register_all", "__version__"]
