"""Super-resolution inference speed and memory: EDSR-baseline and EDSR at x2 and x4 on a
256 x 256 input, and tiled versus whole-image inference of a 2K image.

There is no installable peer implementation (BasicSR does not import with current
torchvision, the official EDSR code is not a package), so the comparison made in one run is
tiled versus whole-image inference of the same model: time and peak memory ratios. Peak
memory is the peak resident set size above the level before the call (Linux
`/proc/self/clear_refs` + `VmHWM`) on the CPU, `torch.cuda.max_memory_allocated` on a GPU.

    python benchmarks/bench_sr.py            # EDSR-baseline everywhere, EDSR at 256 x 256
    python benchmarks/bench_sr.py --full     # also EDSR on the 2K image (tiled only)
    python benchmarks/bench_sr.py --models EDSR-baseline   # skip EDSR at 256 x 256
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _results import machine, proc_status_mib, write_section  # noqa: E402

import densenets  # noqa: E402
from densenets.config import MODELS, build  # noqa: E402
from densenets.modeling.super_resolution import tiled_forward  # noqa: E402

SIZES = {"EDSR-baseline": (16, 64, 1.0), "EDSR": (32, 256, 0.1)}
MEMORY_CAP_MB = 1024  # tiled inference of a 2K image must stay under this


def _model(name: str, scale: int, device: torch.device) -> torch.nn.Module:
    blocks, channels, res_scale = SIZES[name]
    cfg = {"type": "EDSR", "body": {"type": "EDSRBody", "num_blocks": blocks, "channels": channels,
                                    "res_scale": res_scale},
           "upsampler": {"type": "PixelShuffleUpsampler", "scale": scale}}
    return build(cfg, MODELS).eval().to(device)


def _reset_peak(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        return torch.cuda.memory_allocated() / 2**20
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return proc_status_mib("VmRSS")


def _peak(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() / 2**20
    return proc_status_mib("VmHWM")


def measure(fn, x: torch.Tensor, device: torch.device, reps: int) -> tuple[float, float, torch.Tensor]:
    """(best seconds per call, peak extra MB, output) after a warm-up call on a 64 x 64 crop
    (which sets up the convolution kernels without paying for a whole large call)."""
    with torch.no_grad():
        fn(x[..., :64, :64])
        base = _reset_peak(device)
        times = []
        for _ in range(reps):
            t = time.perf_counter()
            y = fn(x)
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t)
        peak = _peak(device) - base
    return min(times), peak, y


def bench_256(device: torch.device, reps: int, models: list[str]) -> list[str]:
    rows = []
    for name in models:
        for scale in (2, 4):
            model = _model(name, scale, device)
            x = torch.rand(1, 3, 256, 256, device=device) * 255
            sec, mem, _ = measure(model.network, x, device, reps if name == "EDSR-baseline" else 1)
            params = sum(p.numel() for p in model.parameters()) / 1e6
            rows.append(f"| {name} x{scale} | {params:.2f} M | {sec:.2f} | {1 / sec:.3f} | "
                        f"{(256 * scale) ** 2 / sec / 1e6:.3f} | {mem:.0f} |")
            print(rows[-1], flush=True)
    return rows


def bench_2k(device: torch.device, models: list[str]) -> list[str]:
    rows = []
    x = torch.rand(1, 3, 678, 1020, device=device) * 255  # DIV2K 0001 at x2: 1356 x 2040 out
    for name in models:
        model = _model(name, 2, device)
        tiled = functools.partial(tiled_forward, model.network, scale=2, tile_size=256, overlap=16)
        t_sec, t_mem, t_out = measure(tiled, x, device, 1)
        whole = "skipped (too slow on CPU)" if name == "EDSR" and device.type == "cpu" else None
        if whole is None:
            w_sec, w_mem, w_out = measure(model.network, x, device, 1)
            diff = (w_out - t_out).abs().max().item()
            whole = f"{w_sec:.1f} s, {w_mem:.0f} MB | {t_sec / w_sec:.2f} | {t_mem / w_mem:.2f} | {diff:.2e}"
        else:
            whole += " | | | "
        ok = "yes" if t_mem <= MEMORY_CAP_MB else "NO"
        rows.append(f"| {name} x2 | {t_sec:.1f} s, {t_mem:.0f} MB ({ok}) | {whole} |")
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--reps", type=int, default=2, help="timed runs per EDSR-baseline case (best kept)")
    parser.add_argument("--models", nargs="+", choices=list(SIZES), default=list(SIZES),
                        help="models to time at 256 x 256")
    parser.add_argument("--full", action="store_true", help="also EDSR (32 x 256) on the 2K image")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    args = parser.parse_args()
    densenets.register_all()
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    head = ["| model | params | s / image | images / s | output MPix / s | peak memory (MB) |",
            "|---|---|---|---|---|---|"]
    print("\n".join(head), flush=True)
    rows = bench_256(device, args.reps, args.models)
    head2 = [f"| model | tiled: 256-pixel LR tiles, 16 overlap (under {MEMORY_CAP_MB} MB?) | whole image | "
             "time ratio tiled / whole | memory ratio | max abs difference (0..255) |", "|---|---|---|---|---|---|"]
    print("\n".join(head2), flush=True)
    rows2 = bench_2k(device, ["EDSR-baseline", "EDSR"] if args.full else ["EDSR-baseline"])
    body = (f"Machine: {machine()}; device {device}.\n\n"
            "Inference on a 256 x 256 low-resolution input (random weights; speed does not depend on them):\n\n"
            + "\n".join(head + rows)
            + "\n\nA 2K image: 1020 x 678 LR -> 2040 x 1356, tiled versus whole:\n\n"
            + "\n".join(head2 + rows2)
            + "\n\n`python benchmarks/bench_sr.py" + (" --full" if args.full else "")
            + (f" --models {' '.join(args.models)}" if args.models != list(SIZES) else "")
            + (f" --reps {args.reps}" if args.reps != 2 else "")
            + (f" --threads {args.threads}" if args.threads else "") + "`\n")
    write_section("super_resolution", body)


if __name__ == "__main__":
    main()
