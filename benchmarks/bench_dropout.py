"""CPU dropout: `densenets.ops.dropout` vs `torch.nn.functional.dropout`, in one run.

The activations of a Deformable DETR encoder layer at 800 x 1067, batch 2 (17821 flattened
pixels): the FFN hidden tensor (2 x 17821 x 1024) and the model-width one (2 x 17821 x 256),
p = 0.1; forward, and forward + backward. The two alternate call by call; median of
`--repeat` calls. Writes the `dropout` section of benchmarks/RESULTS.md.

    python benchmarks/bench_dropout.py [--repeat 7] [--threads 1] [--no-write]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import machine, write_section  # noqa: E402

from densenets.ops import dropout  # noqa: E402

SHAPES = {"FFN hidden": (2, 17821, 1024), "model width": (2, 17821, 256)}
P = 0.1


def _forward(fn, x):
    return lambda: fn(x, P, True)


def _forward_backward(fn, x):
    leaf = x.detach().requires_grad_()
    grad = torch.ones_like(x)

    def run():
        fn(leaf, P, True).backward(grad)
        leaf.grad = None

    return run


def _median_ms(pair, repeat: int) -> tuple[float, float]:
    times = ([], [])
    for f in pair:
        f()  # warm-up
    for _ in range(repeat):
        for i, f in enumerate(pair):
            start = time.perf_counter()
            f()
            times[i].append((time.perf_counter() - start) * 1e3)
    return statistics.median(times[0]), statistics.median(times[1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rows = []
    for name, shape in SHAPES.items():
        x = torch.randn(shape)
        for what, make in (("forward", _forward), ("forward + backward", _forward_backward)):
            ours, torch_ms = _median_ms((make(dropout, x), make(F.dropout, x)), args.repeat)
            rows.append(
                f"| {name} {tuple(shape)} | {what} | {ours:.1f} | {torch_ms:.1f} | {ours / torch_ms:.2f} |"
            )
            print(rows[-1], flush=True)
    body = "\n".join([
        "## Dropout (CPU, p = 0.1)",
        "",
        f"`python benchmarks/bench_dropout.py --repeat {args.repeat} --threads {args.threads}`; {machine()}.",
        "Median milliseconds, the two alternating call by call.",
        "",
        "| tensor | pass | densenets.ops.dropout (ms) | F.dropout (ms) | ratio |",
        "|---|---|---|---|---|",
        *rows,
    ])  # fmt: skip
    if not args.no_write:
        write_section("dropout", body)
    print(body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
