#!/usr/bin/env python
"""ResNet-50 (+FPN) speed: densenets vs torchvision, same weights, side by side.

Like-for-like with torchvision's Faster R-CNN backbone: FrozenBatchNorm2d everywhere,
stem and res2 frozen (torchvision: ``trainable_layers=3``). Measured: inference
(``no_grad`` forward) and a training step (forward + backward of a loss on every
output). The models run alternately and the median of the repeats is reported.

    python benchmarks/bench_backbone.py [--size 480 640] [--batch 2] [--repeats 5] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torchvision
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.ops import FrozenBatchNorm2d
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

sys.path.insert(0, str(Path(__file__).parent))
from _results import machine, write_section  # noqa: E402

from densenets.checkpoint.convert.resnet import torchvision_fpn_to_densenets, torchvision_resnet_to_densenets  # noqa: E402
from densenets.modeling.backbones import ResNet  # noqa: E402
from densenets.modeling.necks import FPN  # noqa: E402


class OursWithFPN(torch.nn.Module):
    def __init__(self, backbone: ResNet, neck: FPN | None) -> None:
        super().__init__()
        self.backbone, self.neck = backbone, neck

    def forward(self, x):
        features = self.backbone(x)
        return self.neck(features) if self.neck is not None else features


def build_pair(with_fpn: bool, channels_last: bool):
    torch.manual_seed(0)
    resnet = torchvision.models.resnet50(norm_layer=FrozenBatchNorm2d)
    layers = {"layer1": "0", "layer2": "1", "layer3": "2", "layer4": "3"}
    tv = BackboneWithFPN(resnet, layers, [256, 512, 1024, 2048], 256, LastLevelMaxPool())
    if not with_fpn:
        tv = tv.body
    for name, p in tv.named_parameters():  # trainable_layers=3, as fasterrcnn_resnet50_fpn
        if not any(layer in name for layer in ("layer2", "layer3", "layer4", "fpn")):
            p.requires_grad_(False)
    backbone = ResNet(depth=50, norm="FrozenBN", freeze_at=2, channels_last=channels_last)
    backbone.load_state_dict(torchvision_resnet_to_densenets(resnet.state_dict()), strict=False)
    neck = None
    if with_fpn:
        neck = FPN(backbone.output_shape())
        neck.load_state_dict(torchvision_fpn_to_densenets(tv.state_dict(), "fpn."))
        if channels_last:
            neck.to(memory_format=torch.channels_last)
    return tv, OursWithFPN(backbone, neck)


def step(model: torch.nn.Module, x: torch.Tensor, train: bool) -> float:
    start = time.perf_counter()
    if train:
        out = model(x)
        sum(v.float().square().mean() for v in out.values()).backward()
        model.zero_grad(set_to_none=True)
    else:
        with torch.no_grad():
            model(x)
    return time.perf_counter() - start


def measure(models: dict, x: torch.Tensor, train: bool, repeats: int) -> dict[str, float]:
    times = {name: [] for name in models}
    for model in models.values():
        model.train(train)
        step(model, x, train)  # warm-up (allocator, oneDNN primitive caches)
    for _ in range(repeats):
        for name, model in models.items():
            times[name].append(step(model, x, train))
    return {name: statistics.median(t) for name, t in times.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, nargs=2, default=(480, 640), metavar=("H", "W"))
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    x = torch.randn(args.batch, 3, *args.size)
    rows = []
    for with_fpn in (False, True):
        tv, ours = build_pair(with_fpn, channels_last=False)
        _, ours_cl = build_pair(with_fpn, channels_last=True)
        models = {"torchvision": tv, "densenets": ours, "densenets channels_last": ours_cl}
        for train in (False, True):
            t = measure(models, x, train, args.repeats)
            rows.append((
                "ResNet-50" + (" + FPN" if with_fpn else ""),
                "train step" if train else "inference",
                t["torchvision"],
                t["densenets"],
                t["densenets channels_last"],
            ))  # fmt: skip
            print(rows[-1], flush=True)
    lines = [
        f"ResNet-50 (+FPN), FrozenBN, stem+res2 frozen, batch {args.batch} x 3 x {args.size[0]} x {args.size[1]}, "
        f"CPU float32, median of {args.repeats} alternating runs. {machine()}",
        "",
        "| model | mode | torchvision (s) | densenets (s) | ratio | densenets channels_last (s) | ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    for model, mode, tv_t, ours_t, cl_t in rows:
        lines.append(
            f"| {model} | {mode} | {tv_t:.3f} | {ours_t:.3f} | {ours_t / tv_t:.2f} | {cl_t:.3f} | {cl_t / tv_t:.2f} |"
        )
    body = "\n".join(lines)
    print(body)
    if not args.no_write:
        write_section("backbone", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
