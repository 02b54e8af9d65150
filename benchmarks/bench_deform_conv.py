"""Deformable convolution speed: densenets vs torchvision.ops.deform_conv2d vs F.conv2d.

One DCN layer of a ResNet stage (N=2, C_in=C_out=256, 64x64, 3x3, padding 1) with 1 and 4
deformable groups, with (DCNv2) and without (DCNv1) mask; forward and forward+backward;
on CPU, and on CUDA when present (float32, plus bfloat16 for densenets and conv2d, with
torchvision in float32 as the baseline). All three run in one process (ours and conv2d
alternating call by call), and the table gives median times and the ratios
ours/torchvision and ours/conv2d (lower is better). Writes the table to
benchmarks/RESULTS.md (section `deform_conv`).

    python benchmarks/bench_deform_conv.py [--reps 5] [--devices cpu cuda]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import machine, write_section  # noqa: E402

from densenets.ops import deform_conv2d, extension_available  # noqa: E402

N, C, SIZE, KERNEL = 2, 256, 64, 3


def time_once(fn: Callable[[], None], device: torch.device) -> float:
    """Wall time of one call of `fn` in milliseconds."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - start) * 1e3


def timed(fn: Callable[[], None], device: torch.device, reps: int) -> float:
    """Median wall time of `fn` in milliseconds, after one warm-up call."""
    fn()
    return statistics.median(time_once(fn, device) for _ in range(reps))


def make_layer(device: torch.device, dtype: torch.dtype, deform_groups: int, with_mask: bool, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    k = KERNEL * KERNEL

    def rand(*shape, scale=1.0):
        return (torch.randn(*shape, generator=gen) * scale).to(device, dtype).requires_grad_()

    tensors = {
        "input": rand(N, C, SIZE, SIZE),
        "offset": rand(N, 2 * deform_groups * k, SIZE, SIZE, scale=2.0),
        "weight": rand(C, C, KERNEL, KERNEL, scale=0.02),
        "bias": rand(C),
        "mask": torch.rand(N, deform_groups * k, SIZE, SIZE, generator=gen).to(device, dtype).requires_grad_()
        if with_mask
        else None,
    }
    return tensors


def call(op: str, t: dict) -> torch.Tensor:
    if op == "conv2d":
        return F.conv2d(t["input"], t["weight"], t["bias"], padding=1)
    fn = deform_conv2d if op == "ours" else torchvision.ops.deform_conv2d
    return fn(t["input"], t["offset"], t["weight"], t["bias"], padding=1, mask=t["mask"])


def make_step(op: str, t: dict, backward: bool, device: torch.device) -> Callable[[], None]:
    grad = torch.ones(N, C, SIZE, SIZE, device=device, dtype=t["input"].dtype)

    def step() -> None:
        if backward:
            for v in t.values():
                if v is not None:
                    v.grad = None
            call(op, t).backward(grad)
        else:
            with torch.no_grad():
                call(op, t)

    return step


def measure_pair(t: dict, backward: bool, device: torch.device, reps: int) -> tuple[float, float]:
    """Median times of ours and F.conv2d, alternating so that machine load affects both alike."""
    ours, conv = make_step("ours", t, backward, device), make_step("conv2d", t, backward, device)
    ours()
    conv()
    times = [(time_once(ours, device), time_once(conv, device)) for _ in range(reps)]
    return statistics.median(a for a, _ in times), statistics.median(b for _, b in times)


def rows_for(device: torch.device, dtype: torch.dtype, reps: int) -> list[str]:
    rows = []
    for deform_groups in (1, 4):
        for with_mask in (False, True):
            ours_t = make_layer(device, dtype, deform_groups, with_mask)
            base_t = make_layer(device, torch.float32, deform_groups, with_mask)
            for backward in (False, True):
                ours, conv = measure_pair(ours_t, backward, device, reps)
                tv_reps = max(1, reps // 2) if device.type == "cpu" else reps
                tv = timed(make_step("torchvision", base_t, backward, device), device, tv_reps)
                rows.append(
                    f"| {device.type} | {str(dtype).replace('torch.', '')} | {deform_groups} | "
                    f"{'yes' if with_mask else 'no'} | {'fwd+bwd' if backward else 'fwd'} | {ours:.1f} | "
                    f"{tv:.1f} | {conv:.1f} | {ours / tv:.2f} | {ours / conv:.2f} |"
                )
                print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--reps", type=int, default=5, help="timed repetitions per measurement (median)")
    parser.add_argument("--devices", nargs="+", default=["cpu", "cuda"], choices=["cpu", "cuda"])
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    args = parser.parse_args()
    if not extension_available():
        sys.exit("densenets._C is not built: pip install --no-build-isolation -e .")
    header = (
        "| device | dtype | deform groups | mask | pass | densenets ms | torchvision ms (float32) | "
        "conv2d ms | ours / torchvision | ours / conv2d |\n|---|---|---|---|---|---|---|---|---|---|"
    )
    print(header)
    rows = []
    if "cpu" in args.devices:
        rows += rows_for(torch.device("cpu"), torch.float32, args.reps)
    if "cuda" in args.devices and torch.cuda.is_available():
        for dtype in (torch.float32, torch.bfloat16):
            rows += rows_for(torch.device("cuda"), dtype, args.reps)
    body = (
        f"## Deformable convolution (`benchmarks/bench_deform_conv.py`)\n\n"
        f"Layer: N={N}, C_in=C_out={C}, {SIZE}x{SIZE}, {KERNEL}x{KERNEL}, padding 1; median of {args.reps} runs.\n"
        f"Machine: {machine()}; load average {os.getloadavg()[0]:.1f} at the end of the run.\n"
        f"Command: `python benchmarks/bench_deform_conv.py {' '.join(sys.argv[1:])}`\n\n"
        + header
        + "\n"
        + "\n".join(rows)
        + "\n"
    )
    if not args.no_write:
        write_section("deform_conv", body)


if __name__ == "__main__":
    main()
