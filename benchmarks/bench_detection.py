#!/usr/bin/env python
"""Faster R-CNN R50-FPN speed and memory: densenets vs torchvision, like for like.

Both models: ResNet-50 with FrozenBatchNorm2d, stem and res2 frozen (torchvision's
``trainable_backbone_layers=3``), FPN P2-P6, 81 classes (80 + background), the same
weights, and torchvision's head settings (``faster_rcnn_r50_fpn_torchvision.yaml``:
RoIAlign sampling ratio 2, 2000/1000 proposals, ...). Measured on one process:

* inference: one 800 x 1067 uint8 image (torchvision gets it as float in [0, 1]; its
  transform's resize is then the identity), `no_grad`, eval mode;
* training step: two such images with 8 boxes each, forward + backward + SGD step.

The models run alternately and the median of the repeats is reported; peak memory is
the peak resident set size (``VmHWM``) of a separate process that builds only the
measured model and runs two iterations of it (CUDA: peak allocated memory). Not
``ru_maxrss``: Linux carries that high-water mark over ``fork``/``exec``, so a child
started by a parent holding three models would report the parent's peak.

    python benchmarks/bench_detection.py [--repeats 5] [--device cpu] [--no-write]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torchvision
from torchvision.models.detection import FasterRCNN as TVFasterRCNN
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
from torchvision.ops import FrozenBatchNorm2d

sys.path.insert(0, str(Path(__file__).parent))
from _results import machine, proc_status_mib, write_section  # noqa: E402

import densenets  # noqa: E402
from densenets.checkpoint.convert import convert  # noqa: E402
from densenets.config import MODELS, build, load_config  # noqa: E402

CONFIG = Path(__file__).parents[1] / "configs/detection/faster_rcnn_r50_fpn_torchvision.yaml"
SIZE = (800, 1067)
VARIANTS = ("torchvision", "densenets", "densenets channels_last")


def build_models(
    device: str, variants: tuple[str, ...] = VARIANTS, same_weights: bool = True
) -> dict[str, torch.nn.Module]:
    """The models of `variants`; ours get torchvision's weights unless `same_weights` is off
    (the memory child, which must not hold a second model)."""
    torch.manual_seed(0)
    models, state = {}, None
    if "torchvision" in variants or same_weights:
        resnet = torchvision.models.resnet50(norm_layer=FrozenBatchNorm2d)
        tv = TVFasterRCNN(_resnet_fpn_extractor(resnet, 3), num_classes=81, min_size=SIZE[0], max_size=1333)
        state = convert("torchvision-faster-rcnn", tv.state_dict()) if same_weights else None
        if "torchvision" in variants:
            models["torchvision"] = tv
        del tv, resnet
    for name, channels_last in (("densenets", False), ("densenets channels_last", True)):
        if name not in variants:
            continue
        overrides = [
            "model.backbone.weights=null",
            "model.roi_heads.num_classes=80",
            f"+model.backbone.channels_last={channels_last}",
        ]
        cfg = load_config(CONFIG, overrides)
        ours = build(cfg.model, MODELS)
        if state is not None:
            ours.load_state_dict(state)
        models[name] = ours
    return {k: m.to(device) for k, m in models.items()}


def make_batch(n: int, seed: int) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    batch = []
    for _ in range(n):
        image = torch.randint(0, 256, (3, *SIZE), dtype=torch.uint8, generator=g)
        xy = torch.rand(8, 2, generator=g) * torch.tensor([SIZE[1] * 0.7, SIZE[0] * 0.7])
        wh = torch.rand(8, 2, generator=g) * 300 + 20
        boxes = torch.cat((xy, xy + wh), 1)
        labels = torch.randint(0, 80, (8,), generator=g)
        batch.append({"image": image, "orig_size": SIZE, "instances": {"boxes": boxes, "labels": labels}})
    return batch


def run_once(name: str, model: torch.nn.Module, optim, batch: list[dict], train: bool, device: str) -> float:
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    if name == "torchvision":
        images = [b["image"].to(device).float() / 255 for b in batch]
        targets = [
            {"boxes": b["instances"]["boxes"].to(device), "labels": b["instances"]["labels"].to(device) + 1}
            for b in batch
        ]
        if train:
            loss = sum(model(images, targets).values())
        else:
            with torch.no_grad():
                model(images)
    else:
        if train:
            loss = sum(model(batch).values())
        else:
            with torch.no_grad():
                model(batch)
    if train:
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def _optimizer(model: torch.nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-4, momentum=0.9)


def measure_times(models: dict, train: bool, repeats: int, device: str) -> dict[str, float]:
    batch = make_batch(2 if train else 1, seed=0)
    optims = {k: _optimizer(m) for k, m in models.items()}
    times = {k: [] for k in models}
    for name, model in models.items():
        model.train(train)
        run_once(name, model, optims[name], batch, train, device)  # warm-up
    for _ in range(repeats):
        for name, model in models.items():
            times[name].append(run_once(name, model, optims[name], batch, train, device))
    return {k: statistics.median(v) for k, v in times.items()}


def peak_memory(variant: str, train: bool, device: str) -> float:
    """Peak memory (MiB) of one model in a fresh process (two iterations)."""
    out = subprocess.run(
        [sys.executable, __file__, "--_memory", variant, "train" if train else "infer", "--device", device],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_mib"]


def _memory_child(variant: str, mode: str, device: str) -> None:
    model = build_models(device, (variant,), same_weights=False)[variant]
    train = mode == "train"
    model.train(train)
    optim = _optimizer(model)
    batch = make_batch(2 if train else 1, seed=0)
    for _ in range(2):
        run_once(variant, model, optim, batch, train, device)
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = proc_status_mib("VmHWM")
    print(json.dumps({"peak_mib": peak}))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory processes")
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    parser.add_argument("--_memory", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    densenets.register_all()
    if args._memory:
        _memory_child(*args._memory, args.device)
        return 0
    models = build_models(args.device)
    rows = []
    for train in (False, True):
        t = measure_times(models, train, args.repeats, args.device)
        mem = {k: None if args.no_memory else peak_memory(k, train, args.device) for k in models}
        rows.append(("training step (batch 2)" if train else "inference (1 image)", t, mem))
        print(rows[-1], flush=True)
    lines = [
        f"Faster R-CNN R50-FPN, like for like (FrozenBN, stem+res2 frozen, 81 classes, torchvision's head "
        f"settings), {SIZE[0]} x {SIZE[1]} images, {args.device} float32, median of {args.repeats} alternating runs; "
        f"peak memory = {'peak RSS of a separate process' if args.device == 'cpu' else 'peak CUDA allocation'}. "
        f"{machine()}",
        "",
        "| mode | torchvision (s) | densenets NCHW (s) | ratio | densenets channels_last, the config default (s) | ratio "
        "| peak MiB tv / ours / ours CL |",
        "|---|---|---|---|---|---|---|",
    ]
    for mode, t, mem in rows:
        tv_t = t["torchvision"]
        mem_text = " / ".join("-" if mem[k] is None else f"{mem[k]:.0f}" for k in VARIANTS)
        lines.append(
            f"| {mode} | {tv_t:.3f} | {t['densenets']:.3f} | {t['densenets'] / tv_t:.2f} | "
            f"{t['densenets channels_last']:.3f} | {t['densenets channels_last'] / tv_t:.2f} | {mem_text} |"
        )
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        write_section("detection" if args.device == "cpu" else "detection-cuda", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
