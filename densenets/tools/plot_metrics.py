#!/usr/bin/env python
"""Draw the loss, LR and evaluation curves of a run:
`tools/plot_metrics.py RUN_DIR_OR_METRICS_JSONL [--output PNG]` (default RUN_DIR/metrics.png).

Per-class metrics (COCO per-category AP, per-class IoU), when the run has them, go to a
second image beside it, `<name>_per_class.png` (a heat map: a row per class)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("run", help="a run directory or its metrics.jsonl")
    parser.add_argument("--output", help="PNG to write (default: next to metrics.jsonl, metrics.png)")
    args = parser.parse_args(argv)
    from densenets.engine.events import plot_metrics  # after parsing: --help stays fast

    path = Path(args.run)
    metrics = path / "metrics.jsonl" if path.is_dir() else path
    if not metrics.is_file():
        print(f"error: {metrics}: no such file", file=sys.stderr)
        return 2
    try:
        out = plot_metrics(metrics, args.output or metrics.with_name("metrics.png"))
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(out)
    per_class = out.with_name(f"{out.stem}_per_class.png")
    if per_class.is_file():
        print(per_class)
    return 0


if __name__ == "__main__":
    sys.exit(main())
