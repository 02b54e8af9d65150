"""Reference models from mmsegmentation / mmdetection for the converter tests.

The models are built by the installed packages from their own shipped config files
(``<package>/.mim/configs``), so every layer, key name and forward step is theirs.
``mmcv-lite`` (the pure-Python mmcv on PyPI) has no compiled ``mmcv._ext``; its
Python op wrappers (``mmcv.ops.RoIAlign``, ``nms``, ``DeformConv2dPack``,
``ModulatedDeformConv2dPack``) are kept and only the kernels they call are supplied,
by torchvision's kernels of the same ops: ``roi_align`` (mmcv's ``avg`` mode, same
``aligned`` / ``sampling_ratio`` semantics), ``nms`` (offset 0) and ``deform_conv2d``
(the DCNv1/v2 kernels mmcv's and torchvision's both descend from, same offset layout).
With a full mmcv (compiled ops), its own kernels run instead.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

MM_PACKAGES = ("mmengine", "mmcv", "mmseg", "mmdet")


def require(package: str) -> None:
    """Skip the calling test unless `package` and mmengine/mmcv are importable."""
    for name in ("mmengine", "mmcv", package):
        if importlib.util.find_spec(name) is None:
            pytest.skip(
                f"needs {name} to build the reference model (pip install --no-deps mmengine==0.10.7 "
                "mmcv-lite==2.1.0 mmsegmentation==1.2.2 mmdet==3.3.0 and their pure-Python deps, "
                "docs/segmentation.md)"
            )
    _install_ext_kernels()
    logging.getLogger("mmengine").setLevel(logging.WARNING)  # init_weights logs every tensor


def _install_ext_kernels() -> None:
    if "mmcv._ext" in sys.modules or importlib.util.find_spec("mmcv._ext") is not None:
        return
    ext = types.ModuleType("mmcv._ext")
    ext.__file__ = "<torchvision kernels>"

    def roi_align_forward(input, rois, output, argmax_y, argmax_x, aligned_height, aligned_width,
                          spatial_scale, sampling_ratio, pool_mode, aligned):  # fmt: skip
        assert pool_mode == 1, "only RoIAlign's avg mode is supplied"
        out = torchvision.ops.roi_align(
            input, rois, (aligned_height, aligned_width), spatial_scale, sampling_ratio, aligned
        )
        output.copy_(out)

    def nms(boxes, scores, iou_threshold, offset):
        assert offset == 0, "only nms with offset 0 is supplied"
        return torchvision.ops.nms(boxes, scores, iou_threshold)

    def deform_conv_forward(input, weight, offset, output, columns, ones, kW, kH, dW, dH, padW, padH,
                            dilationW, dilationH, group, deformable_group, im2col_step):  # fmt: skip
        out = torchvision.ops.deform_conv2d(
            input, offset, weight, None, (dH, dW), (padH, padW), (dilationH, dilationW)
        )
        output.copy_(out)

    def modulated_deform_conv_forward(input, weight, bias, ones, offset, mask, output, columns, kernel_h,
                                      kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w,
                                      group, deformable_group, with_bias):  # fmt: skip
        out = torchvision.ops.deform_conv2d(
            input, offset, weight, bias if with_bias else None, (stride_h, stride_w), (pad_h, pad_w),
            (dilation_h, dilation_w), mask,
        )  # fmt: skip
        output.copy_(out)

    for fn in (roi_align_forward, nms, deform_conv_forward, modulated_deform_conv_forward):
        setattr(ext, fn.__name__, fn)

    def __getattr__(name: str):  # every other mmcv kernel: importable, not callable
        if name.startswith("__"):
            raise AttributeError(name)

        def missing(*args, **kwargs):
            raise NotImplementedError(f"mmcv._ext.{name} is not supplied to the reference models")

        return missing

    ext.__getattr__ = __getattr__
    sys.modules["mmcv._ext"] = ext


def _config(package: str, relative: str):
    from mmengine.config import Config

    module = importlib.import_module(package)
    path = Path(module.__file__).parent / ".mim" / "configs" / relative
    if not path.is_file():
        pytest.skip(f"{package} ships no config {relative}")
    return Config.fromfile(str(path))


def _bn(cfg) -> None:
    """SyncBN -> BN in a config tree (same parameters and keys, runs on one CPU process)."""
    if isinstance(cfg, dict):
        for key, value in cfg.items():
            if key == "norm_cfg" and isinstance(value, dict) and value.get("type") == "SyncBN":
                value["type"] = "BN"
            else:
                _bn(value)
    elif isinstance(cfg, (list, tuple)):
        for value in cfg:
            _bn(value)


def build_mmseg(relative: str) -> nn.Module:
    """An mmsegmentation model from its shipped config, random weights, eval mode."""
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules

    register_all_modules()
    cfg = _config("mmseg", relative)
    cfg.model.pop("pretrained", None)
    cfg.model.backbone.pop("init_cfg", None)
    _bn(cfg.model)
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    randomise_norms(model)
    return model.eval()


def build_mmdet(relative: str, **backbone) -> nn.Module:
    """An mmdetection model from its shipped config, random weights, eval mode."""
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules

    register_all_modules()
    cfg = _config("mmdet", relative)
    cfg.model.backbone.pop("init_cfg", None)
    cfg.model.backbone.update(backbone)
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    randomise_norms(model)
    return model.eval()


def randomise_norms(model: nn.Module, seed: int = 1) -> None:
    """Non-trivial BN statistics and affine parameters (fresh ones are 0 / 1)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.rand(m.num_features, generator=g) * 0.2 - 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) * 0.5 + 0.75)
                m.weight.copy_(torch.rand(m.num_features, generator=g) * 0.5 + 0.75)
                m.bias.copy_(torch.rand(m.num_features, generator=g) * 0.2 - 0.1)


def randomise_offsets(model: nn.Module, std: float = 0.05, seed: int = 2) -> int:
    """Non-zero weights for every DCN offset/mask predictor (``conv_offset``, zero at
    init), so deformable convolutions sample off the grid. Returns how many."""
    g = torch.Generator().manual_seed(seed)
    n = 0
    with torch.no_grad():
        for name, m in model.named_modules():
            if name.endswith("conv_offset"):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * std)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g))
                n += 1
    return n


def save_like_training(model: nn.Module, path: str | os.PathLike, package: str, classes: tuple) -> None:
    """Write ``{"meta": ..., "state_dict": ...}`` as mmengine's checkpoint saving does
    (``weights_to_cpu(get_state_dict(model))``; the meta of a released model)."""
    from mmengine.runner.checkpoint import get_state_dict, save_checkpoint, weights_to_cpu

    module = importlib.import_module(package)
    meta = {
        f"{package}_version": module.__version__,
        "dataset_meta": {"classes": classes},
        "epoch": 12,
        "iter": 80000,
        "seed": 0,
        "experiment_name": "reference",
        "time": "20260101_000000",
    }
    state = weights_to_cpu(get_state_dict(model))
    save_checkpoint({"meta": meta, "state_dict": state}, str(path))


def photo(height: int, width: int) -> np.ndarray:
    """A real photograph (skimage's astronaut), resized to HxW: uint8 HWC RGB."""
    from skimage import data, transform

    image = transform.resize(data.astronaut(), (height, width), order=1, anti_aliasing=True)
    return (image * 255).round().astype(np.uint8)
