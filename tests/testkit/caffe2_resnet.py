"""detectron2's MSRA ResNet-50 (caffe2 blobs, as in its R-50.pkl) built from a torchvision
ResNet-50, and the function detectron2 computes from such blobs, for the checkpoint
converter and Faster R-CNN parity tests."""

from __future__ import annotations

import copy

import numpy as np
import torch

__all__ = ["EPS", "msra_blobs", "detectron2_network"]

EPS = 1e-5


def msra_blobs(tv: torch.nn.Module) -> dict[str, np.ndarray]:
    """caffe2/MSRA blobs (as in detectron2's R-50.pkl) holding a torchvision ResNet-50's
    weights: convs ``*_w``, norms folded into an affine ``*_bn_s`` / ``*_bn_b``."""
    sd = {k: v.double() for k, v in tv.state_dict().items()}
    blobs = {}

    def norm(src: str, dst: str) -> None:
        scale = sd[f"{src}.weight"] / (sd[f"{src}.running_var"] + EPS).sqrt()
        blobs[f"{dst}_bn_s"] = scale.float().numpy()
        blobs[f"{dst}_bn_b"] = (sd[f"{src}.bias"] - sd[f"{src}.running_mean"] * scale).float().numpy()

    blobs["conv1_w"] = sd["conv1.weight"].float().numpy()
    norm("bn1", "res_conv1")
    for layer in range(1, 5):
        for block in range(len(getattr(tv, f"layer{layer}"))):
            src, dst = f"layer{layer}.{block}", f"res{layer + 1}_{block}"
            for i, branch in enumerate("abc", start=1):
                blobs[f"{dst}_branch2{branch}_w"] = sd[f"{src}.conv{i}.weight"].float().numpy()
                norm(f"{src}.bn{i}", f"{dst}_branch2{branch}")
            if f"{src}.downsample.0.weight" in sd:
                blobs[f"{dst}_branch1_w"] = sd[f"{src}.downsample.0.weight"].float().numpy()
                norm(f"{src}.downsample.1", f"{dst}_branch1")
    blobs["fc1000_w"] = sd["fc.weight"].float().numpy()
    blobs["fc1000_b"] = sd["fc.bias"].float().numpy()
    blobs["conv1_w_momentum"] = np.zeros(1, np.float32)  # solver state in some files
    return blobs


def detectron2_network(tv: torch.nn.Module, blobs: dict[str, np.ndarray]) -> torch.nn.Module:
    """The function detectron2 computes after loading `blobs`, written with torchvision's modules.

    detectron2/checkpoint/detection_checkpoint.py hands caffe2 blobs to
    `align_and_update_state_dicts`, which renames them and keeps only ``weight`` (``_bn_s``)
    and ``bias`` (``_bn_b``) of each norm; `FrozenBatchNorm2d._load_from_state_dict`
    (detectron2/layers/batch_norm.py) then fills the missing ``running_mean`` with zeros
    and ``running_var`` with ones, and eval runs ``F.batch_norm(x, 0, 1, s, b, eps=1e-5)``,
    i.e. ``x * s / sqrt(1 + eps) + b``. Here: the same norms on a float64 torchvision copy.
    """
    net = copy.deepcopy(tv).double().eval()
    d2 = {}  # torchvision norm name -> caffe2 prefix, as in msra_blobs
    d2["bn1"] = "res_conv1"
    for layer in range(1, 5):
        for block in range(len(getattr(net, f"layer{layer}"))):
            src, dst = f"layer{layer}.{block}", f"res{layer + 1}_{block}"
            for i, branch in enumerate("abc", start=1):
                d2[f"{src}.bn{i}"] = f"{dst}_branch2{branch}"
            d2[f"{src}.downsample.1"] = f"{dst}_branch1"
    with torch.no_grad():
        for name, m in net.named_modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.copy_(torch.from_numpy(blobs[f"{d2[name]}_bn_s"]))
                m.bias.copy_(torch.from_numpy(blobs[f"{d2[name]}_bn_b"]))
                m.running_mean.zero_()
                m.running_var.fill_(1.0)
                m.eps = EPS
    return net
