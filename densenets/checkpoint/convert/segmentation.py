"""torchvision's `fcn_resnet50/101` and `deeplabv3_resnet50/101` -> our `EncoderDecoder`.

The converted weights fit these model configs (D8 ResNet in torchvision's layout):

    backbone: {type: ResNet, depth: 50, out_features: [res4, res5], output_stride: 8,
               contract_dilation: true}
    FCN:       decode_head: {type: FCNHead, num_classes: 21, channels: 512, num_convs: 1,
                             concat_input: false}
    DeepLabV3: decode_head: {type: DeepLabV3Head, num_classes: 21, channels: 256, dropout: 0,
                             aspp: {channels: 256, project: true, dropout: 0.5}}
    auxiliary_head: {type: FCNHead, in_feature: res4, num_classes: 21, channels: 256,
                     num_convs: 1, concat_input: false}

(see `configs/segmentation/torchvision_*.yaml`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch

from . import register_converter
from .resnet import torchvision_resnet_to_densenets, unwrap_state_dict

__all__ = ["torchvision_fcn_to_densenets", "torchvision_deeplabv3_to_densenets"]

# torchvision FCNHead = Sequential(conv 3x3, BN, ReLU, Dropout, conv 1x1).
_FCN_HEAD = [
    (r"0\.weight", "convs.0.conv.weight"),
    (r"1\.(\w+)", r"convs.0.norm.\1"),
    (r"4\.(weight|bias)", r"classifier.\1"),
]
# torchvision DeepLabHead = Sequential(ASPP, conv 3x3, BN, ReLU, conv 1x1); ASPP.convs =
# [1x1 branch, three atrous branches, pooling = (avgpool, conv, BN, ReLU)], then `project`.
_DEEPLAB_HEAD = [
    (r"0\.convs\.([0-3])\.0\.weight", r"aspp.branches.\1.conv.weight"),
    (r"0\.convs\.([0-3])\.1\.(\w+)", r"aspp.branches.\1.norm.\2"),
    (r"0\.convs\.4\.1\.weight", "aspp.image_pool.conv.weight"),
    (r"0\.convs\.4\.2\.(\w+)", r"aspp.image_pool.norm.\1"),
    (r"0\.project\.0\.weight", "aspp.project.conv.weight"),
    (r"0\.project\.1\.(\w+)", r"aspp.project.norm.\1"),
    (r"1\.weight", "bottleneck.conv.weight"),
    (r"2\.(\w+)", r"bottleneck.norm.\1"),
    (r"4\.(weight|bias)", r"classifier.\1"),
]


def _convert_head(
    state_dict: Mapping[str, torch.Tensor], src_prefix: str, dst_prefix: str, rules: list, source: str
) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state_dict.items():
        if not key.startswith(src_prefix):
            continue
        name = key[len(src_prefix) :]
        for pattern, repl in rules:
            if re.fullmatch(pattern, name):
                out[dst_prefix + re.sub(pattern, repl, name)] = value
                break
        else:
            raise KeyError(f"{source}: no rule maps checkpoint key {key!r} to densenets' layout")
    return out


def _convert(state_dict: Mapping[str, torch.Tensor], head_rules: list, source: str) -> dict[str, torch.Tensor]:
    out = torchvision_resnet_to_densenets(state_dict, "backbone.", "backbone.")
    out.update(_convert_head(state_dict, "classifier.", "decode_head.", head_rules, source))
    out.update(_convert_head(state_dict, "aux_classifier.", "auxiliary_head.", _FCN_HEAD, source))
    known = ("backbone.", "classifier.", "aux_classifier.")
    stray = [k for k in state_dict if not k.startswith(known)]
    if stray:
        raise KeyError(f"{source}: unexpected checkpoint key {stray[0]!r}")
    return out


def torchvision_fcn_to_densenets(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`torchvision.models.segmentation.fcn_resnet50/101` state dict -> ours."""
    return _convert(state_dict, _FCN_HEAD, "torchvision-fcn")


def torchvision_deeplabv3_to_densenets(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`torchvision.models.segmentation.deeplabv3_resnet50/101` state dict -> ours."""
    return _convert(state_dict, _DEEPLAB_HEAD, "torchvision-deeplabv3")


@register_converter("torchvision-fcn")
def convert_torchvision_fcn(obj: Any) -> dict[str, torch.Tensor]:
    """A torchvision FCN-ResNet checkpoint -> our EncoderDecoder with FCN heads."""
    return torchvision_fcn_to_densenets(unwrap_state_dict(obj))


@register_converter("torchvision-deeplabv3")
def convert_torchvision_deeplabv3(obj: Any) -> dict[str, torch.Tensor]:
    """A torchvision DeepLabV3-ResNet checkpoint -> our EncoderDecoder with a DeepLabV3 head."""
    return torchvision_deeplabv3_to_densenets(unwrap_state_dict(obj))
