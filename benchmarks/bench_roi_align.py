#!/usr/bin/env python
"""RoIAlign forward and backward on CPU: densenets.ops.roi_align vs torchvision.ops.roi_align.

Cases: the P2 map of a Faster R-CNN R50-FPN training batch (2 x 256 x 200 x 272, 1024
RoIs, 7 x 7, sampling ratio 2) and the demo detector's (4 x 128 x 48 x 48, 512 RoIs),
each with NCHW features and, for ours, channels-last features (read in place). The
timings are the minimum over the repeats, the two implementations alternating.

    python benchmarks/bench_roi_align.py [--repeats 5] [--no-write]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torchvision

sys.path.insert(0, str(Path(__file__).parent))
from _results import machine, write_section  # noqa: E402

from densenets.ops import roi_align  # noqa: E402

CASES = {
    "R50-FPN P2, batch 2": ((2, 256, 200, 272), 1024, 0.25),
    "demo P2, batch 4": ((4, 128, 48, 48), 512, 0.25),
}


def make_case(shape, num_rois, scale, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g)
    extent = shape[3] / scale
    xy = torch.rand(num_rois, 2, generator=g) * extent * 0.9
    wh = torch.rand(num_rois, 2, generator=g) * extent / 6 + 4
    idx = torch.randint(0, shape[0], (num_rois, 1), generator=g).float()
    return x, torch.cat((idx, xy, xy + wh), 1)


def time_fn(fn, x, rois, scale):
    x = x.detach().clone().requires_grad_(True)
    t0 = time.perf_counter()
    y = fn(x, rois, 7, scale, 2, True)
    t1 = time.perf_counter()
    y.backward(torch.ones_like(y))
    return t1 - t0, time.perf_counter() - t1


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    lines = [
        f"RoIAlign on CPU, float32, 7 x 7 bins, sampling ratio 2, aligned; minimum of {args.repeats} alternating "
        f"runs; ms. {machine()}",
        "",
        "| case | pass | torchvision (ms) | densenets NCHW (ms) | ratio | densenets channels-last (ms) | ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, (shape, num_rois, scale) in CASES.items():
        x, rois = make_case(shape, num_rois, scale)
        variants = {
            "tv": (torchvision.ops.roi_align, x),
            "ours": (roi_align, x),
            "ours_cl": (roi_align, x.contiguous(memory_format=torch.channels_last)),
        }
        best = {k: [float("inf"), float("inf")] for k in variants}
        for _ in range(args.repeats + 1):  # the first round warms up
            for k, (fn, inp) in variants.items():
                f, b = time_fn(fn, inp, rois, scale)
                best[k] = [min(best[k][0], f), min(best[k][1], b)]
        for i, pass_name in enumerate(("forward", "backward")):
            tv, ours, cl = (best[k][i] * 1e3 for k in ("tv", "ours", "ours_cl"))
            lines.append(
                f"| {name} | {pass_name} | {tv:.1f} | {ours:.1f} | {ours / tv:.2f} | {cl:.1f} | {cl / tv:.2f} |"
            )
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        write_section("roi_align", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
