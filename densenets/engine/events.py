"""Metric records: `metrics.jsonl`, TensorBoard event files and PNG curves.

A record is a flat dict with an `iter` key: training records hold `loss`, the
`loss_*` terms, `lr`, `time`, `data_time`; evaluation records hold `task/metric` keys.
TensorBoard and matplotlib are imported only when used.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["JSONWriter", "TensorboardWriter", "read_metrics", "plot_metrics"]

_NOT_CURVES = {"iter", "time", "data_time", "eta_seconds", "epoch"}


class JSONWriter:
    """Appends one JSON object per record to `path` (a resumed run continues the file)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(self.path, "a")

    def write(self, record: Mapping[str, Any]) -> None:
        # NaN/Inf are written as JSON's common extension (NaN, Infinity), which
        # `json.loads` reads back as floats.
        self._f.write(json.dumps(dict(record)) + "\n")
        self._f.flush()

    def close(self) -> None:
        self._f.close()


class TensorboardWriter:
    """Scalars of every record into TensorBoard event files under `log_dir`."""

    def __init__(self, log_dir: str | os.PathLike) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self._w = SummaryWriter(log_dir=str(log_dir))

    def write(self, record: Mapping[str, Any]) -> None:
        step = int(record["iter"])
        for key, value in record.items():
            if key != "iter" and isinstance(value, (int, float)) and not isinstance(value, bool):
                self._w.add_scalar(key, value, step)
        self._w.flush()

    def close(self) -> None:
        self._w.close()


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """The records of a `metrics.jsonl`; for iterations written twice (a resumed
    run repeats the steps after its checkpoint) the later record wins."""
    records: dict[tuple[int, tuple[str, ...]], dict] = {}
    with open(path) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                raise ValueError(f"{path}:{n}: not a JSON line") from None
            records[(int(rec.get("iter", 0)), tuple(sorted(rec)))] = rec
    return sorted(records.values(), key=lambda r: r.get("iter", 0))


def plot_metrics(metrics_path: str | os.PathLike, out_path: str | os.PathLike) -> Path:
    """Draw every loss/metric curve of a `metrics.jsonl` into one PNG.

    One panel per key: the `loss*` terms, `lr`, then each evaluation metric.

    Returns:
        The PNG's path.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    records = read_metrics(metrics_path)
    series: dict[str, tuple[list[int], list[float]]] = {}
    for rec in records:
        for key, value in rec.items():
            if key in _NOT_CURVES or not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            xs, ys = series.setdefault(key, ([], []))
            xs.append(int(rec["iter"]))
            ys.append(float(value))
    if not series:
        raise ValueError(f"{metrics_path}: no numeric metrics to plot")
    keys = sorted(series, key=lambda k: (not k.startswith("loss"), k != "loss", "/" in k, k))
    cols = min(3, len(keys))
    rows = math.ceil(len(keys) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.5 * cols, 3.2 * rows), squeeze=False)
    for ax, key in zip(axes.flat, keys):
        xs, ys = series[key]
        ax.plot(xs, ys, marker="o" if len(xs) < 20 else None, markersize=3)
        ax.set_title(key)
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
        finite = [y for y in ys if math.isfinite(y)]
        if key.startswith("loss") and finite and min(finite) > 0 and max(finite) / min(finite) > 20:
            ax.set_yscale("log")
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    fig.tight_layout()
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=100)
    plt.close(fig)
    return out_path
