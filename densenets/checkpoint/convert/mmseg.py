"""mmsegmentation checkpoints -> densenets' `EncoderDecoder` (FCN, DeepLabV3, DeepLabV3+).

A released mmsegmentation model (``{"meta": ..., "state_dict": ...}``, as its training
saves it) converts to the configs ``configs/segmentation/mmseg_*.yaml``, which rebuild it
layer for layer:

- backbone ``ResNetV1c`` (``stem.0/1``, ``stem.3/4``, ``stem.6/7``: the deep stem, our
  ``deep_stem: true``), ``ResNetV1d`` (the same plus ``downsample.1/2`` after an average
  pool, our ``avg_down: true``) or plain ``ResNet`` (``conv1``/``bn1``); ``layerK`` ->
  ``res{K+1}``;
- ``FCNHead`` (decode or auxiliary): ``convs.i``, ``conv_cat``, ``conv_seg`` ->
  ``convs.i``, ``conv_cat``, ``classifier``;
- ``ASPPHead``: ``image_pool.1`` -> ``aspp.image_pool``, ``aspp_modules.i`` ->
  ``aspp.branches.i`` (the dilation-1 entry is the 1x1 branch), ``bottleneck``; the
  pooled branch comes first in mmsegmentation's concatenation, hence
  ``aspp: {pool_first: true}``;
- ``DepthwiseSeparableASPPHead`` (DeepLabV3+): as ``ASPPHead`` with
  ``depthwise_conv``/``pointwise_conv`` -> ``depthwise``/``pointwise``,
  ``c1_bottleneck`` -> ``low_level``, ``sep_bottleneck`` -> ``fuse``.

mmcv's ``ConvModule`` names its norm ``bn`` (``gn`` for GroupNorm); ours is ``norm``.
A backbone-only file (mmcv's ImageNet ``resnet50_v1c`` weights: keys without
``backbone.``) converts to our ResNet layout for a backbone's ``weights:``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from . import register_converter
from .resnet import unwrap_state_dict

__all__ = ["mmseg_to_densenets", "mmseg_resnet_to_densenets"]

Rule = tuple[str, str]

_NORM = r"(?:bn|gn)"  # mmcv ConvModule's norm name by norm type

# mmseg/mmdet ResNet (V1c/V1d deep stem, or conv1/bn1), layerK -> res{K+1} applied after.
_RESNET: list[Rule] = [
    (r"stem\.([036])\.weight", "stem.conv{s}.weight"),
    (r"stem\.([147])\.(\w+)", "stem.norm{s}.{2}"),
    (r"conv1\.weight", "stem.conv1.weight"),
    (r"bn1\.(\w+)", "stem.norm1.{1}"),
    (r"layer(\d)\.(\d+)\.conv(\d)\.weight", "res{r}.{2}.conv{3}.weight"),
    (r"layer(\d)\.(\d+)\.conv2\.conv_offset\.(\w+)", "res{r}.{2}.conv2.conv_offset.{3}"),
    (r"layer(\d)\.(\d+)\.bn(\d)\.(\w+)", "res{r}.{2}.norm{3}.{4}"),
    (r"fc\.(weight|bias)", "linear.{1}"),
]
# Shortcut: Sequential(conv, norm), or Sequential(AvgPool2d, conv, norm) with avg_down.
_SHORTCUT = [
    (r"layer(\d)\.(\d+)\.downsample\.0\.weight", "res{r}.{2}.shortcut.conv.weight"),
    (r"layer(\d)\.(\d+)\.downsample\.1\.(\w+)", "res{r}.{2}.shortcut.norm.{3}"),
]
_SHORTCUT_AVG_DOWN = [
    (r"layer(\d)\.(\d+)\.downsample\.1\.weight", "res{r}.{2}.shortcut.conv.weight"),
    (r"layer(\d)\.(\d+)\.downsample\.2\.(\w+)", "res{r}.{2}.shortcut.norm.{3}"),
]


def _conv_module(src: str, dst: str) -> list[Rule]:
    """An mmcv ``ConvModule`` (``conv``, ``bn``/``gn``) -> our ``ConvNormAct`` (``conv``, ``norm``)."""
    last = re.compile(src).groups + 1  # the parameter name's group
    return [
        (rf"{src}\.conv\.(weight|bias)", f"{dst}.conv.{{{last}}}"),
        (rf"{src}\.{_NORM}\.(\w+)", f"{dst}.norm.{{{last}}}"),
    ]


def _separable(src: str, dst: str) -> list[Rule]:
    """mmcv ``DepthwiseSeparableConvModule`` -> our ``SeparableConvNormAct``."""
    return _conv_module(rf"{src}\.depthwise_conv", f"{dst}.depthwise") + _conv_module(
        rf"{src}\.pointwise_conv", f"{dst}.pointwise"
    )


_HEAD: list[Rule] = [
    (r"conv_seg\.(weight|bias)", "classifier.{1}"),
    *_conv_module(r"convs\.(\d+)", "convs.{1}"),
    *_conv_module(r"conv_cat", "conv_cat"),
    *_conv_module(r"image_pool\.1", "aspp.image_pool"),
    *_conv_module(r"aspp_modules\.(\d+)", "aspp.branches.{1}"),
    *_separable(r"aspp_modules\.(\d+)", "aspp.branches.{1}"),
    *_conv_module(r"bottleneck", "bottleneck"),
    *_conv_module(r"c1_bottleneck", "low_level"),
    *_separable(r"sep_bottleneck\.(\d+)", "fuse.{1}"),
]


def _tensor(value: Any) -> torch.Tensor:
    return value if isinstance(value, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(value))


def _apply(name: str, rules: list[tuple[re.Pattern, str]]) -> str | None:
    """The first rule's template filled in: ``{1}`` a match group, ``{r}`` group 1's
    ``layerK`` as ``res{K+1}``'s number, ``{s}`` group 1's stem Sequential index as 1..3."""
    for pattern, template in rules:
        m = pattern.fullmatch(name)
        if m:
            fields = {str(i): g for i, g in enumerate(m.groups(), 1)}
            if m.groups():
                fields["r"] = str(int(m[1]) + 1) if m[1].isdigit() else ""
                fields["s"] = str(int(m[1]) // 3 + 1) if m[1].isdigit() else ""
            return re.sub(r"\{(\w+)\}", lambda f, fields=fields: fields[f[1]], template)
    return None


def _rename(
    state_dict: Mapping[str, Any], rules: list[Rule], src_prefix: str, dst_prefix: str, source: str
) -> dict[str, torch.Tensor]:
    compiled = [(re.compile(p), t) for p, t in rules]
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if not key.startswith(src_prefix):
            continue
        new = _apply(key[len(src_prefix) :], compiled)
        if new is None:
            raise KeyError(f"{source}: no rule maps checkpoint key {key!r} to densenets' layout")
        out[dst_prefix + new] = _tensor(value)
    return out


def mmseg_resnet_to_densenets(
    state_dict: Mapping[str, Any], src_prefix: str = "", dst_prefix: str = "", source: str = "mmseg ResNet"
) -> dict[str, torch.Tensor]:
    """mmseg/mmdet/mmcv ResNet keys (V1c/V1d deep stem, pytorch or caffe style, DCN
    ``conv2.conv_offset``) under `src_prefix` -> our ResNet under `dst_prefix`."""
    avg_down = any(
        re.fullmatch(rf"{re.escape(src_prefix)}layer\d\.\d+\.downsample\.2\.weight", k) for k in state_dict
    )
    rules = _RESNET + (_SHORTCUT_AVG_DOWN if avg_down else _SHORTCUT)
    out = _rename(state_dict, rules, src_prefix, dst_prefix, source)
    if not out:
        raise KeyError(f"{source}: no checkpoint key starts with {src_prefix!r}")
    return out


def mmseg_to_densenets(state_dict: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """An mmsegmentation ``EncoderDecoder`` state dict -> ours (see the module docstring).

    Raises:
        KeyError: a key no rule knows (the message names it).
    """
    source = "mmseg"
    if not any(k.startswith("decode_head.") for k in state_dict):
        return mmseg_resnet_to_densenets(state_dict, source=source)  # ImageNet backbone weights
    out = mmseg_resnet_to_densenets(state_dict, "backbone.", "backbone.", source)
    out.update(_rename(state_dict, _HEAD, "decode_head.", "decode_head.", source))
    out.update(_rename(state_dict, _HEAD, "auxiliary_head.", "auxiliary_head.", source))
    stray = [k for k in state_dict if not k.startswith(("backbone.", "decode_head.", "auxiliary_head."))]
    if stray:
        raise KeyError(
            f"{source}: no rule maps checkpoint key {stray[0]!r} (only backbone and heads convert)"
        )
    return out


@register_converter("mmseg")
def convert_mmseg(obj: Any) -> dict[str, torch.Tensor]:
    """An mmsegmentation checkpoint (``{"meta", "state_dict"}``) -> our EncoderDecoder."""
    return mmseg_to_densenets(unwrap_state_dict(obj))
