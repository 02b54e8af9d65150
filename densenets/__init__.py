"""densenets: dense prediction on PyTorch — detection, segmentation, super-resolution."""

from __future__ import annotations

__version__ = "0.1.0"


def _check_torchvision() -> None:
    """Fail once, clearly, when torchvision's compiled ops cannot load."""
    import torch

    try:
        import torchvision

        ok = hasattr(torch.ops.torchvision, "nms") and hasattr(torch.ops.torchvision, "roi_align")
        detail = "its operators are not registered"
    except Exception as e:  # noqa: BLE001 - any failure here means the same thing to a user
        ok, detail, torchvision = False, f"{type(e).__name__}: {e}".splitlines()[0], None
    if not ok:
        tv = getattr(torchvision, "__version__", "not importable")
        raise ImportError(
            f"densenets needs torchvision's compiled ops, which failed to load ({detail}); "
            f"torch {torch.__version__} with torchvision {tv} is not a matching pair "
            "(a CPU-only torch under a CUDA torchvision is the usual cause). Fix: "
            "pip install --upgrade --force-reinstall 'torch>=2.6' 'torchvision>=0.21'"
        )


_check_torchvision()

from . import config, data, engine, evaluation, layers, modeling, ops  # noqa: E402

__all__ = ["config", "data", "engine", "evaluation", "layers", "modeling", "ops", "__version__"]
