"""Multi-scale deformable attention speed: densenets' kernels vs the grid_sample path.

The shape of one encoder layer of DINO R50 4-scale (800x1333 input): batch 2, levels
100x167, 50x84, 25x42, 13x21 (22,223 pixels, every one a query), 8 heads of 32 channels,
4 points per head and level. Sampling locations are the encoder's reference points (the
pixel centres) plus offsets of a few pixels, attention weights a softmax over the 16
samples of a head. The grid_sample path is `densenets.ops.ms_deform_attn_reference`, what
mmcv, detrex and transformers run without their CUDA op (and on every CPU). Forward
(no grad) and forward+backward (gradients of value, locations and weights) run in one
process, alternating, and the table gives median times and the ratio ours / grid_sample
(lower is better). Writes benchmarks/RESULTS.md (section `ms_deform_attn`).

    python benchmarks/bench_ms_deform_attn.py [--reps 5] [--devices cpu cuda]
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import machine, write_section  # noqa: E402

from densenets.ops import extension_available, ms_deform_attn, ms_deform_attn_reference  # noqa: E402

BATCH, HEADS, CHANNELS, POINTS = 2, 8, 32, 4
LEVELS = ((100, 167), (50, 84), (25, 42), (13, 21))


def timed(fn: Callable[[], None], device: torch.device, reps: int) -> list[float]:
    """Wall times of `fn` in milliseconds, after one warm-up call."""
    fn()
    times = []
    for _ in range(reps):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append((time.perf_counter() - start) * 1e3)
    return times


def make_inputs(device: torch.device, dtype: torch.dtype, seed: int = 0) -> dict[str, torch.Tensor]:
    """Encoder-like inputs: queries at every pixel, locations a few pixels around them."""
    gen = torch.Generator().manual_seed(seed)
    shapes = torch.tensor(LEVELS, dtype=torch.int64)
    sizes = shapes.prod(1)
    starts = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])
    refs = []
    for h, w in LEVELS:
        y, x = torch.meshgrid((torch.arange(h) + 0.5) / h, (torch.arange(w) + 0.5) / w, indexing="ij")
        refs.append(torch.stack([x.flatten(), y.flatten()], -1))
    ref = torch.cat(refs)  # (Q, 2) normalised (x, y)
    q, num_levels = ref.shape[0], len(LEVELS)
    pixels = torch.randn(BATCH, q, HEADS, num_levels, POINTS, 2, generator=gen) * 2.0
    norm = shapes.flip(-1).to(torch.float32)  # (L, 2) as (w, h)
    loc = ref[None, :, None, None, None, :] + pixels / norm[None, None, None, :, None, :]
    attn = torch.randn(BATCH, q, HEADS, num_levels * POINTS, generator=gen).softmax(-1)
    value = torch.randn(BATCH, int(sizes.sum()), HEADS, CHANNELS, generator=gen)
    tensors = {
        "value": value,
        "spatial_shapes": shapes,
        "level_start_index": starts,
        "sampling_locations": loc,
        "attention_weights": attn.view(BATCH, q, HEADS, num_levels, POINTS),
    }
    return {
        k: (v.to(device, dtype).requires_grad_() if v.is_floating_point() else v.to(device))
        for k, v in tensors.items()
    }


def measure(fn: Callable, t: dict, backward: bool, device: torch.device, reps: int) -> list[float]:
    args = [
        t[k]
        for k in ("value", "spatial_shapes", "level_start_index", "sampling_locations", "attention_weights")
    ]
    grad = torch.ones(BATCH, args[3].shape[1], HEADS * CHANNELS, device=device, dtype=args[0].dtype)

    def step() -> None:
        if backward:
            for a in args:
                a.grad = None
            fn(*args).backward(grad)
        else:
            with torch.no_grad():
                fn(*args)

    return timed(step, device, reps)


def rows_for(device: torch.device, dtype: torch.dtype, reps: int) -> list[str]:
    t = make_inputs(device, dtype)
    rows = []
    for backward in (False, True):
        ours, ref = [], []
        # Alternate the two so that machine load affects both alike.
        for _ in range(reps):
            ours += measure(ms_deform_attn, t, backward, device, 1)
            ref += measure(ms_deform_attn_reference, t, backward, device, 1)
        o, r = statistics.median(ours), statistics.median(ref)
        rows.append(
            f"| {device.type} | {str(dtype).replace('torch.', '')} | {'fwd+bwd' if backward else 'fwd'} | "
            f"{o:.1f} | {r:.1f} | {o / r:.2f} |"
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
    header = "| device | dtype | pass | densenets ms | grid_sample ms | ours / grid_sample |\n|---|---|---|---|---|---|"
    print(header)
    rows = []
    if "cpu" in args.devices:
        rows += rows_for(torch.device("cpu"), torch.float32, args.reps)
    if "cuda" in args.devices and torch.cuda.is_available():
        for dtype in (torch.float32, torch.bfloat16):
            rows += rows_for(torch.device("cuda"), dtype, args.reps)
    levels = ", ".join(f"{h}x{w}" for h, w in LEVELS)
    command = "python benchmarks/bench_ms_deform_attn.py" + (f" --reps {args.reps}" if args.reps != 5 else "")
    body = (
        "## Multi-scale deformable attention (`benchmarks/bench_ms_deform_attn.py`)\n\n"
        f"DINO R50 4-scale encoder layer: batch {BATCH}, levels {levels} (all pixels are queries), "
        f"{HEADS} heads x {CHANNELS} channels, {POINTS} points; median of {args.reps} alternating runs.\n"
        f"Machine: {machine()}; load average {os.getloadavg()[0]:.1f} at the end of the run.\n"
        f"Command: `{command}`\nTargets on CPU: fwd <= 0.5, fwd+bwd <= 0.3 of the grid_sample path.\n\n"
        + header
        + "\n"
        + "\n".join(rows)
        + "\n"
    )
    if not args.no_write:
        write_section("ms_deform_attn", body)


if __name__ == "__main__":
    main()
