"""Build the official DETR / DAB-DETR models from their source trees (random weights).

The sources are not a dependency: point ``DETR_SRC`` at a checkout of
facebookresearch/detr and ``DAB_DETR_SRC`` at one of IDEA-Research/DAB-DETR; tests that
need them skip otherwise. Both trees have top-level ``models`` / ``util`` packages, so
each build imports them afresh and removes them from ``sys.modules`` afterwards.
"""

from __future__ import annotations

import os
import sys
import types
from argparse import Namespace
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from torch import nn

_TOP = ("models", "util", "datasets", "timm")


def source_root(env: str) -> Path:
    """The checkout named by environment variable `env`, or skip the calling test."""
    root = os.environ.get(env)
    if not root or not (Path(root) / "models").is_dir():
        pytest.skip(f"{env} does not name a checkout of the official source")
    return Path(root)


def _drop_official_modules() -> dict:
    return {k: sys.modules.pop(k) for k in list(sys.modules) if k.split(".")[0] in _TOP}


@contextmanager
def _imported_from(root: Path):
    saved = _drop_official_modules()
    # A bare `models` package: the official models/__init__.py also imports models that
    # need compiled ops (DAB-DETR's deformable variant); only the plain model is needed.
    pkg = types.ModuleType("models")
    pkg.__path__ = [str(root / "models")]
    sys.modules["models"] = pkg
    if "timm" in saved or _missing("timm"):  # DAB-DETR's Swin file imports timm at module level
        for name in ("timm", "timm.models", "timm.models.layers"):
            sys.modules[name] = types.ModuleType(name)
        layers = sys.modules["timm.models.layers"]
        layers.DropPath, layers.to_2tuple, layers.trunc_normal_ = nn.Identity, None, None
    sys.path.insert(0, str(root))
    try:
        yield
    finally:
        sys.path.remove(str(root))
        _drop_official_modules()
        sys.modules.update(saved)


def _missing(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is None


def official_detr(root: Path, dilation: bool = False) -> nn.Module:
    """facebookresearch/detr's `build(args)` with its main.py defaults, no pretrained download."""
    with _imported_from(root):
        import models.backbone as backbone
        from models.detr import build

        backbone.is_main_process = lambda: False  # pretrained=is_main_process(): no download
        args = Namespace(
            backbone="resnet50", dilation=dilation, position_embedding="sine", lr_backbone=1e-5,
            masks=False, hidden_dim=256, dropout=0.1, nheads=8, num_queries=100, dim_feedforward=2048,
            enc_layers=6, dec_layers=6, pre_norm=False, aux_loss=True, dataset_file="coco", device="cpu",
            set_cost_class=1, set_cost_bbox=5, set_cost_giou=2, bbox_loss_coef=5, giou_loss_coef=2,
            eos_coef=0.1, frozen_weights=None, mask_loss_coef=1, dice_loss_coef=1,
        )  # fmt: skip
        model = build(args)[0]
    return model


def official_dab_detr(root: Path, dilation: bool = False, num_patterns: int = 0) -> nn.Module:
    """IDEA-Research/DAB-DETR's `build_DABDETR(args)` with its main.py defaults."""
    with _imported_from(root):
        import models.DAB_DETR.backbone as backbone
        from models.DAB_DETR.DABDETR import build_DABDETR

        backbone.is_main_process = lambda: False
        args = Namespace(
            backbone="resnet50", dilation=dilation, position_embedding="sine", pe_temperatureH=20,
            pe_temperatureW=20, batch_norm_type="FrozenBatchNorm2d", lr_backbone=1e-5, masks=False,
            hidden_dim=256, dropout=0.0, nheads=8, num_queries=300, dim_feedforward=2048, enc_layers=6,
            dec_layers=6, pre_norm=False, transformer_activation="prelu", num_patterns=num_patterns,
            random_refpoints_xy=False, aux_loss=True, dataset_file="coco", device="cpu", num_select=300,
            set_cost_class=2, set_cost_bbox=5, set_cost_giou=2, cls_loss_coef=1, bbox_loss_coef=5,
            giou_loss_coef=2, focal_alpha=0.25, frozen_weights=None, mask_loss_coef=1, dice_loss_coef=1,
        )  # fmt: skip
        model = build_DABDETR(args)[0]
    return model


def randomise_frozen_norms(model: nn.Module, seed: int = 0) -> None:
    """Non-trivial statistics in every frozen norm (buffers named running_mean/var, weight, bias)."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if hasattr(m, "running_var") and not isinstance(m, nn.BatchNorm2d):
            n = m.running_var.numel()
            m.running_mean.copy_(torch.rand(n, generator=g) * 0.2 - 0.1)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.copy_(torch.rand(n, generator=g) * 0.5 + 0.75)
            m.bias.copy_(torch.rand(n, generator=g) * 0.2 - 0.1)
