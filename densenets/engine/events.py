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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["JSONWriter", "TensorboardWriter", "read_metrics", "metric_panels", "plot_metrics"]

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


# Evaluation metrics drawn right after the loss and the LR, in this order; others follow.
_HEADLINE = ("AP", "mIoU", "PSNR", "AP50", "AP75", "SSIM", "mAcc", "pAcc")
Series = dict[str, tuple[list[int], list[float]]]


@dataclass
class Panel:
    """One plot: `series` maps a line label to its (iterations, values)."""

    title: str
    series: Series = field(default_factory=dict)


@dataclass
class PerClass:
    """A per-class metric family (e.g. ``bbox/AP``): class name -> (iterations, values)."""

    title: str
    classes: Series = field(default_factory=dict)


def _numeric_series(records: list[dict]) -> Series:
    series: Series = {}
    for rec in records:
        for key, value in rec.items():
            if key in _NOT_CURVES or not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            if not math.isfinite(value):
                continue
            xs, ys = series.setdefault(key, ([], []))
            xs.append(int(rec["iter"]))
            ys.append(float(value))
    return series


def _metric_rank(key: str) -> tuple:
    name = key.split("/", 1)[1]
    return (_HEADLINE.index(name) if name in _HEADLINE else len(_HEADLINE), key)


def metric_panels(records: list[dict]) -> tuple[list[Panel], dict[str, PerClass]]:
    """Split the curves of `read_metrics` records into headline panels and per-class families.

    Headline panels, in order: ``loss`` (the total), ``lr``, the evaluation metrics
    (AP / mIoU / PSNR first), ``loss terms`` (every ``loss_*`` in one panel), then any
    other scalar. A key ``task/Metric-name`` (``bbox/AP-person``, ``sem_seg/IoU-road``)
    is a per-class value of the family ``task/Metric``. Keys without a finite value get
    no panel.
    """
    series = _numeric_series(records)
    per_class: dict[str, PerClass] = {}
    metrics, others = [], []
    for key in series:
        task, _, name = key.partition("/")
        if name and "-" in name:
            family, _, cls = name.partition("-")
            per_class.setdefault(f"{task}/{family}", PerClass(f"{task}/{family}")).classes[cls] = series[key]
        elif name:
            metrics.append(key)
        elif key not in ("loss", "lr") and not key.startswith("loss"):
            others.append(key)
    panels = [Panel(k, {k: series[k]}) for k in ("loss", "lr") if k in series]
    panels += [Panel(k, {k.split("/", 1)[1]: series[k]}) for k in sorted(metrics, key=_metric_rank)]
    terms = {k: series[k] for k in series if k.startswith("loss_")}
    if terms:
        panels.append(Panel("loss terms", terms))
    panels += [Panel(k, {k: series[k]}) for k in sorted(others)]
    return panels, per_class


def _draw_panel(ax, panel: Panel) -> None:
    for label, (xs, ys) in panel.series.items():
        ax.plot(xs, ys, marker="o" if len(xs) < 20 else None, markersize=3, label=label)
    ax.set_title(panel.title)
    ax.set_xlabel("iteration")
    ax.grid(alpha=0.3)
    values = [y for _, ys in panel.series.values() for y in ys]
    if panel.title.startswith("loss") and min(values) > 0 and max(values) / min(values) > 20:
        ax.set_yscale("log")
    if len(panel.series) > 1:
        ax.legend(fontsize=6, ncol=2 if len(panel.series) > 6 else 1)


def _draw_per_class(plt, families: dict[str, PerClass]):
    """One heat map per family: a row per class, a column per evaluation."""
    heights = [len(f.classes) for f in families.values()]
    fig, axes = plt.subplots(
        len(families), 1, figsize=(9, sum(0.16 * h + 1.2 for h in heights)), squeeze=False,
        gridspec_kw={"height_ratios": heights},
    )  # fmt: skip
    for ax, family in zip(axes[:, 0], families.values()):
        names = list(family.classes)
        iters = sorted({x for xs, _ in family.classes.values() for x in xs})
        grid = [[math.nan] * len(iters) for _ in names]
        for r, (xs, ys) in enumerate(family.classes.values()):
            for x, y in zip(xs, ys):
                grid[r][iters.index(x)] = y
        image = ax.imshow(grid, aspect="auto", interpolation="nearest", cmap="viridis")
        last = [f"{name}  {ys[-1]:.1f}" for name, (_, ys) in family.classes.items()]
        ax.set_yticks(range(len(names)), last, fontsize=7)  # with the latest value
        step = max(1, len(iters) // 12)
        ax.set_xticks(range(0, len(iters), step), [str(i) for i in iters[::step]], fontsize=7)
        ax.set_xlabel("iteration")
        ax.set_title(f"{family.title} per class")
        fig.colorbar(image, ax=ax, fraction=0.03, pad=0.02)
    fig.tight_layout()
    return fig


def plot_metrics(metrics_path: str | os.PathLike, out_path: str | os.PathLike) -> Path:
    """Draw the curves of a `metrics.jsonl` (see `metric_panels`).

    `out_path` gets the headline panels (loss, lr, AP / mIoU / PSNR, ...); per-class
    values, when there are any, go to a second PNG beside it, ``<stem>_per_class.png``,
    as one heat map per family (a row per class), readable with COCO's 80 classes.

    Returns:
        The path of the headline PNG.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    panels, per_class = metric_panels(read_metrics(metrics_path))
    if not panels:
        raise ValueError(f"{metrics_path}: no numeric metrics to plot")
    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.5 * cols, 3.2 * rows), squeeze=False)
    for ax, panel in zip(axes.flat, panels):
        _draw_panel(ax, panel)
    for ax in list(axes.flat)[len(panels) :]:
        ax.remove()
    fig.tight_layout()
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=100)
    plt.close(fig)
    per_class_path = out_path.with_name(f"{out_path.stem}_per_class.png")
    if per_class:
        fig = _draw_per_class(plt, per_class)
        fig.savefig(per_class_path, dpi=100)
        plt.close(fig)
    return out_path
