"""Key maps from foreign ResNet/FPN checkpoints to densenets' layout.

Our layout (`densenets.modeling.backbones.resnet`): ``stem.conv1``/``stem.norm1``,
``res2.0.conv1``/``res2.0.norm1`` ... ``res2.0.shortcut.conv``/``res2.0.shortcut.norm``,
``linear`` (DCN stages: ``res3.0.conv2.conv_offset``); FPN (`densenets.modeling.necks.fpn`): ``lateral2.conv``, ``output2.conv``
(``.norm`` with a norm), ``top_block.p6``/``top_block.p7``.

Every map renames keys and leaves values alone, except detectron2's caffe2 (MSRA)
files, whose norms are stored as a folded affine ``x * s + b``: those become
``weight = s, bias = b, running_mean = 0, running_var = 1``, detectron2's own
convention (``FrozenBatchNorm2d._load_from_state_dict`` in
detectron2/layers/batch_norm.py fills the missing statistics with zeros and ones), so a
`FrozenBatchNorm2d` (eps 1e-5) computes ``x * s / sqrt(1 + eps) + b`` exactly as a
detectron2 model started from the same file does.

The functions take `src_prefix` (only keys under it are converted, e.g.
``"backbone.body."`` in torchvision's Faster R-CNN) and `dst_prefix` (prepended to the
results, e.g. ``"backbone."``); a key under `src_prefix` that no rule knows is an error.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch

from . import register_converter

__all__ = [
    "torchvision_resnet_to_densenets",
    "timm_resnet_to_densenets",
    "detectron2_resnet_to_densenets",
    "caffe2_resnet_to_densenets",
    "torchvision_fpn_to_densenets",
    "unwrap_state_dict",
    "find_prefix",
]

Rule = tuple[str, Callable[[re.Match], str]]


def _stage(m: re.Match, group: int = 1) -> str:
    """torchvision's ``layer1..layer4`` -> ``res2..res5``."""
    return f"res{int(m[group]) + 1}"


_TORCHVISION: list[Rule] = [
    (r"conv1\.weight", lambda m: "stem.conv1.weight"),
    (r"bn1\.(\w+)", lambda m: f"stem.norm1.{m[1]}"),
    (r"layer(\d)\.(\d+)\.conv(\d)\.weight", lambda m: f"{_stage(m)}.{m[2]}.conv{m[3]}.weight"),
    # mmdetection's DCN ResNets: torchvision names plus the offset predictor.
    (
        r"layer(\d)\.(\d+)\.conv2\.conv_offset\.(\w+)",
        lambda m: f"{_stage(m)}.{m[2]}.conv2.conv_offset.{m[3]}",
    ),
    (r"layer(\d)\.(\d+)\.bn(\d)\.(\w+)", lambda m: f"{_stage(m)}.{m[2]}.norm{m[3]}.{m[4]}"),
    (r"layer(\d)\.(\d+)\.downsample\.0\.weight", lambda m: f"{_stage(m)}.{m[2]}.shortcut.conv.weight"),
    (r"layer(\d)\.(\d+)\.downsample\.1\.(\w+)", lambda m: f"{_stage(m)}.{m[2]}.shortcut.norm.{m[3]}"),
    (r"fc\.(weight|bias)", lambda m: f"linear.{m[1]}"),
]

# timm: the deep stem is a Sequential (convs at 0, 3, 6; norms at 1, 4 and `bn1`), and
# the ResNet-D shortcut is Sequential(pool, conv, norm).
_TIMM_DEEP_STEM: list[Rule] = [
    (r"conv1\.([036])\.weight", lambda m: f"stem.conv{int(m[1]) // 3 + 1}.weight"),
    (r"conv1\.([14])\.(\w+)", lambda m: f"stem.norm{int(m[1]) // 3 + 1}.{m[2]}"),
    (r"bn1\.(\w+)", lambda m: f"stem.norm3.{m[1]}"),
]
_TIMM_AVG_DOWN: list[Rule] = [
    (r"layer(\d)\.(\d+)\.downsample\.1\.weight", lambda m: f"{_stage(m)}.{m[2]}.shortcut.conv.weight"),
    (r"layer(\d)\.(\d+)\.downsample\.2\.(\w+)", lambda m: f"{_stage(m)}.{m[2]}.shortcut.norm.{m[3]}"),
]

_DETECTRON2: list[Rule] = [
    (r"(stem|res\d\.\d+)\.conv(\d)\.weight", lambda m: f"{m[1]}.conv{m[2]}.weight"),
    (r"(stem|res\d\.\d+)\.conv(\d)\.norm\.(\w+)", lambda m: f"{m[1]}.norm{m[2]}.{m[3]}"),
    (r"(res\d\.\d+)\.shortcut\.weight", lambda m: f"{m[1]}.shortcut.conv.weight"),
    (r"(res\d\.\d+)\.conv2_offset\.(\w+)", lambda m: f"{m[1]}.conv2.conv_offset.{m[2]}"),
    (r"(res\d\.\d+)\.shortcut\.norm\.(\w+)", lambda m: f"{m[1]}.shortcut.norm.{m[2]}"),
    (r"linear\.(weight|bias)", lambda m: f"linear.{m[1]}"),
]

_C2_BRANCH = {"2a": "conv1", "2b": "conv2", "2c": "conv3"}
_C2_PARAM = {"w": "weight", "s": "weight", "b": "bias"}
_CAFFE2: list[Rule] = [
    (r"conv1_w", lambda m: "stem.conv1.weight"),
    (r"res_conv1_bn_([sb])", lambda m: f"stem.norm1.{_C2_PARAM[m[1]]}"),
    (r"res(\d)_(\d+)_branch1_w", lambda m: f"res{m[1]}.{m[2]}.shortcut.conv.weight"),
    (r"res(\d)_(\d+)_branch1_bn_([sb])", lambda m: f"res{m[1]}.{m[2]}.shortcut.norm.{_C2_PARAM[m[3]]}"),
    (r"res(\d)_(\d+)_branch(2[abc])_w", lambda m: f"res{m[1]}.{m[2]}.{_C2_BRANCH[m[3]]}.weight"),
    (
        r"res(\d)_(\d+)_branch(2[abc])_bn_([sb])",
        lambda m: f"res{m[1]}.{m[2]}.norm{_C2_BRANCH[m[3]][-1]}.{_C2_PARAM[m[4]]}",
    ),
    (r"fc1000_([wb])", lambda m: f"linear.{_C2_PARAM[m[1]]}"),
]


def _rename(
    state_dict: Mapping[str, Any], rules: list[Rule], src_prefix: str, dst_prefix: str, source: str
) -> dict[str, torch.Tensor]:
    compiled = [(re.compile(pattern), fn) for pattern, fn in rules]
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if not key.startswith(src_prefix):
            continue
        name = key[len(src_prefix) :]
        for pattern, fn in compiled:
            m = pattern.fullmatch(name)
            if m:
                out[dst_prefix + fn(m)] = _to_tensor(value)
                break
        else:
            raise KeyError(f"{source}: no rule maps checkpoint key {key!r} to densenets' ResNet layout")
    if not out:
        raise KeyError(f"{source}: no checkpoint key starts with {src_prefix!r}")
    return out


def _to_tensor(value: Any) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    return torch.from_numpy(np.ascontiguousarray(value))


def torchvision_resnet_to_densenets(
    state_dict: Mapping[str, torch.Tensor], src_prefix: str = "", dst_prefix: str = ""
) -> dict[str, torch.Tensor]:
    """torchvision ResNet/ResNeXt/Wide ResNet keys (``layer1.0.bn1.weight``) -> ours.

    Also the backbones inside torchvision's detection/segmentation models, e.g.
    ``src_prefix="backbone.body."`` (``fasterrcnn_resnet50_fpn``) or ``"backbone."``
    (``fcn_resnet50``, ``deeplabv3_resnet50``).
    """
    return _rename(state_dict, _TORCHVISION, src_prefix, dst_prefix, "torchvision ResNet")


def timm_resnet_to_densenets(
    state_dict: Mapping[str, torch.Tensor], src_prefix: str = "", dst_prefix: str = ""
) -> dict[str, torch.Tensor]:
    """timm ResNet keys -> ours; handles the deep stem and ResNet-D shortcuts (resnet50d)."""
    deep = f"{src_prefix}conv1.0.weight" in state_dict
    avg_down = any(
        re.fullmatch(rf"{re.escape(src_prefix)}layer\d\.\d+\.downsample\.2\.weight", k) for k in state_dict
    )
    # The first matching rule wins, so the timm-specific ones go before torchvision's.
    rules = (_TIMM_DEEP_STEM if deep else []) + (_TIMM_AVG_DOWN if avg_down else []) + _TORCHVISION
    return _rename(state_dict, rules, src_prefix, dst_prefix, "timm ResNet")


def detectron2_resnet_to_densenets(
    state_dict: Mapping[str, Any], src_prefix: str = "", dst_prefix: str = ""
) -> dict[str, torch.Tensor]:
    """detectron2 ResNet keys (``res2.0.conv1.norm.weight``) -> ours.

    Use ``src_prefix="backbone.bottom_up."`` for detectron2's FPN detectors.
    """
    return _rename(state_dict, _DETECTRON2, src_prefix, dst_prefix, "detectron2 ResNet")


def caffe2_resnet_to_densenets(
    blobs: Mapping[str, Any], src_prefix: str = "", dst_prefix: str = ""
) -> dict[str, torch.Tensor]:
    """caffe2 / MSRA blob names (``res2_0_branch2a_bn_s``) -> ours (see the module docstring).

    ``*_momentum`` blobs (solver state) are dropped.
    """
    blobs = {k: v for k, v in blobs.items() if not k.endswith("_momentum")}
    out = _rename(blobs, _CAFFE2, src_prefix, dst_prefix, "caffe2 ResNet")
    for key in [k for k in out if re.search(r"norm\d?\.weight$", k)]:
        base = key[: -len("weight")]
        out.setdefault(base + "running_mean", torch.zeros_like(out[key]))
        out.setdefault(base + "running_var", torch.ones_like(out[key]))  # detectron2's value, not 1 - eps
    return out


def torchvision_fpn_to_densenets(
    state_dict: Mapping[str, torch.Tensor],
    src_prefix: str = "backbone.fpn.",
    dst_prefix: str = "",
    levels: tuple[int, ...] = (2, 3, 4, 5),
) -> dict[str, torch.Tensor]:
    """torchvision ``FeaturePyramidNetwork`` keys -> our `FPN`.

    ``inner_blocks.i`` -> ``lateral{levels[i]}``, ``layer_blocks.i`` -> ``output{levels[i]}``
    (both the current ``inner_blocks.i.0.weight`` form, with ``.1`` a norm, and the old
    ``inner_blocks.i.weight``), ``extra_blocks.p6/p7`` -> ``top_block.p6/p7``.

    Args:
        state_dict: a torchvision detection model's (or FPN's) state dict.
        src_prefix: where the FPN lives (``"backbone.fpn."`` in ``fasterrcnn_resnet50_fpn``).
        dst_prefix: prepended to our keys (e.g. ``"neck."``).
        levels: the pyramid level of each input, lowest first (2..5 for res2..res5).
    """
    kinds = {"inner_blocks": "lateral", "layer_blocks": "output"}
    rules: list[Rule] = [
        (r"(inner_blocks|layer_blocks)\.(\d+)\.(?:0\.)?(weight|bias)", lambda m: f"{kinds[m[1]]}{levels[int(m[2])]}.conv.{m[3]}"),
        (r"(inner_blocks|layer_blocks)\.(\d+)\.1\.(\w+)", lambda m: f"{kinds[m[1]]}{levels[int(m[2])]}.norm.{m[3]}"),
        (r"extra_blocks\.(p6|p7)\.(weight|bias)", lambda m: f"top_block.{m[1]}.{m[2]}"),
    ]  # fmt: skip
    return _rename(state_dict, rules, src_prefix, dst_prefix, "torchvision FPN")


def unwrap_state_dict(obj: Any) -> Mapping[str, Any]:
    """The state dict inside a checkpoint: ``obj["model"]``, ``obj["state_dict"]``,
    caffe2's ``obj["blobs"]``, or `obj` itself."""
    while isinstance(obj, Mapping):
        for key in ("model", "state_dict", "blobs"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
        else:
            return obj
    raise TypeError(f"expected a checkpoint dict, got {type(obj).__name__}")


def find_prefix(state_dict: Mapping[str, Any], suffix: str) -> str | None:
    """The prefix of the shortest key ending with `suffix` (e.g. ``"backbone.body."``)."""
    hits = sorted((k for k in state_dict if k.endswith(suffix)), key=len)
    return hits[0][: -len(suffix)] if hits else None


def _prefixed(obj: Any, suffix: str, source: str) -> tuple[Mapping[str, Any], str]:
    state_dict = unwrap_state_dict(obj)
    prefix = find_prefix(state_dict, suffix)
    if prefix is None:
        raise KeyError(f"{source}: no key ending with {suffix!r}; is this the right format?")
    return state_dict, prefix


@register_converter("torchvision-resnet")
def convert_torchvision_resnet(obj: Any) -> dict[str, torch.Tensor]:
    """A torchvision ResNet checkpoint (or a model containing one) -> our ResNet."""
    sd, prefix = _prefixed(obj, "layer1.0.conv1.weight", "torchvision-resnet")
    return torchvision_resnet_to_densenets(sd, prefix)


@register_converter("timm-resnet")
def convert_timm_resnet(obj: Any) -> dict[str, torch.Tensor]:
    """A timm ResNet/ResNet-D checkpoint -> our ResNet."""
    sd, prefix = _prefixed(obj, "layer1.0.conv1.weight", "timm-resnet")
    return timm_resnet_to_densenets(sd, prefix)


@register_converter("detectron2")
def convert_detectron2_resnet(obj: Any) -> dict[str, torch.Tensor]:
    """detectron2 backbone weights -> our ResNet: caffe2/MSRA ``.pkl`` blobs
    (``R-50.pkl``) or detectron2-named files (model zoo ``.pkl``/``.pth``)."""
    sd = unwrap_state_dict(obj)
    if "conv1_w" in sd or "res_conv1_bn_s" in sd:
        return caffe2_resnet_to_densenets(sd)
    sd, prefix = _prefixed(sd, "stem.conv1.weight", "detectron2")
    return detectron2_resnet_to_densenets(sd, prefix)
