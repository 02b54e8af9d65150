#!/usr/bin/env python
"""Segmentation inference latency: densenets' DeepLabV3-R50-D8 vs torchvision's
`deeplabv3_resnet50`, the same weights, in one run.

Both take an RGB image and return per-pixel class scores at the input size: torchvision
as `model(normalised)["out"]` (normalisation included in its time), densenets as
`model([{"image": uint8}])` (normalisation, padding, softmax and crop included). Sizes:
a whole Cityscapes frame (1024 x 2048) and one 512 x 1024 crop (a sliding window).

    python benchmarks/bench_segmentation.py                      # CPU, writes RESULTS.md
    python benchmarks/bench_segmentation.py --device cuda --runs 20
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _results import machine, write_section  # noqa: E402

import densenets  # noqa: E402
from densenets.checkpoint.convert import convert  # noqa: E402
from densenets.config import MODELS, build, load_config  # noqa: E402

CONFIG = Path(__file__).parents[1] / "configs" / "segmentation" / "torchvision_deeplabv3_resnet50.yaml"
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _time_pair(fn_a, fn_b, runs: int, device: str) -> tuple[float, float]:
    """Median seconds of `runs` calls of each function; the calls alternate
    (a, b, a, b, ...) so that a load change on a shared machine hits both."""
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(runs):
        for fn, out in ((fn_a, times[0]), (fn_b, times[1])):
            _sync(device)
            t = time.perf_counter()
            fn()
            _sync(device)
            out.append(time.perf_counter() - t)
    return statistics.median(times[0]), statistics.median(times[1])


def build_pair(device: str, num_classes: int = 21):
    """torchvision's model and ours with its converted weights, both in eval mode."""
    from torchvision.models.segmentation import deeplabv3_resnet50

    torch.manual_seed(0)
    tv = deeplabv3_resnet50(weights=None, weights_backbone=None, num_classes=num_classes, aux_loss=False)
    cfg = load_config(CONFIG, [f"model.decode_head.num_classes={num_classes}", "model.auxiliary_head=null"])
    ours = build(cfg.model, MODELS)
    missing, unexpected = ours.load_state_dict(convert("torchvision-deeplabv3", tv.state_dict()), strict=False)
    if missing or unexpected:
        raise RuntimeError(f"weight conversion: missing {missing}, unexpected {unexpected}")
    return tv.eval().to(device), ours.eval().to(device)


def _table(rows: list, args: argparse.Namespace) -> str:
    body = [
        "## Segmentation: DeepLabV3-R50-D8 inference latency",
        "",
        f"{machine()}; device {args.device}; median of {args.runs} alternating runs after one untimed "
        "call each; batch 1, 21 classes, same weights. Command: "
        f"`python benchmarks/bench_segmentation.py --sizes {' '.join(args.sizes)} --runs {args.runs}`.",
        "",
        "| input (H x W) | densenets (ms) | torchvision deeplabv3_resnet50 (ms) | ratio | same argmax |",
        "|---|---|---|---|---|",
    ]
    body += [f"| {s} | {a * 1000:.0f} | {b * 1000:.0f} | {a / b:.3f} | {100 * m:.2f}% |" for s, a, b, m in rows]
    return "\n".join(body)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--sizes", nargs="+", default=["1024x2048", "512x1024"], help="HxW")
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    args = parser.parse_args(argv)
    densenets.register_all()

    tv, ours = build_pair(args.device)
    rows = []
    for size in args.sizes:
        h, w = (int(v) for v in size.split("x"))
        image = torch.randint(0, 256, (3, h, w), dtype=torch.uint8, device=args.device)
        mean, std = MEAN.to(args.device), STD.to(args.device)

        def run_tv(image=image, mean=mean, std=std):
            return tv((image[None].float() / 255 - mean) / std)["out"]

        def run_ours(image=image):
            return ours([{"image": image}])[0]["sem_seg"]

        with torch.inference_mode():
            # the first call of each (untimed) warms up and checks that both agree
            same = (run_tv()[0].argmax(0) == run_ours().argmax(0)).float().mean().item()
            t_ours, t_tv = _time_pair(run_ours, run_tv, args.runs, args.device)
        rows.append((size, t_ours, t_tv, same))
        if not args.no_write:
            write_section("segmentation", _table(rows, args))
        print(f"{size}: densenets {t_ours * 1000:.0f} ms, torchvision {t_tv * 1000:.0f} ms, "
              f"ratio {t_ours / t_tv:.3f}, same argmax {100 * same:.2f}%", flush=True)  # fmt: skip

    print(_table(rows, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
