"""Trainer hooks: logging (progress bar, metrics.jsonl, TensorBoard, PNG curves),
periodic checkpoints, periodic evaluation with the best checkpoint."""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from tqdm import tqdm

from densenets.checkpoint import Checkpointer
from densenets.utils import comm

from .events import JSONWriter, TensorboardWriter, plot_metrics
from .trainer import HookBase

__all__ = ["LoggingHook", "CheckpointHook", "EvalHook"]

logger = logging.getLogger(__name__)


class LoggingHook(HookBase):
    """Progress bar with ETA and losses; every `period` steps a record to
    `metrics.jsonl` and TensorBoard; `metrics.png` at the end. Main process only.

    Args:
        output_dir: the run directory.
        period: steps between records (the bar updates every step).
        tensorboard: write TensorBoard event files under `output_dir/tb`.
        plot: draw `metrics.png` when training ends.
    """

    def __init__(
        self, output_dir: str | os.PathLike, period: int = 20, tensorboard: bool = True, plot: bool = True
    ):
        self.output_dir, self.period = Path(output_dir), max(1, period)
        self.tensorboard, self.plot = tensorboard, plot
        self.enabled = comm.is_main_process()
        self._writers: list[Any] = []
        self._bar: tqdm | None = None
        self._start = (time.perf_counter(), 0)

    def before_train(self) -> None:
        if not self.enabled:
            return
        self._writers.append(JSONWriter(self.output_dir / "metrics.jsonl"))
        if self.tensorboard:
            self._writers.append(TensorboardWriter(self.output_dir / "tb"))
        t = self.trainer
        self._bar = tqdm(total=t.max_iter, initial=t.iter, desc="train", dynamic_ncols=True, smoothing=0.1)
        self._start = (time.perf_counter(), t.iter)

    def after_step(self) -> None:
        if not self.enabled:
            return
        t = self.trainer
        latest = t.latest
        if self._bar is not None:
            shown = {k: f"{v:.4g}" for k, v in latest.items() if k.startswith("loss")}
            shown["lr"] = f"{latest['lr']:.3g}"
            self._bar.set_postfix(shown, refresh=False)
            self._bar.update(1)
        if t.iter % self.period == 0 or t.iter == t.max_iter:
            record = {"iter": t.iter, **latest}
            # Mean rate since this run (or resume) started; tqdm's own rate is None until
            # its first display refresh, which fast iterations can outrun.
            start_time, start_iter = self._start
            elapsed, done = time.perf_counter() - start_time, t.iter - start_iter
            if done > 0 and elapsed > 0:
                record["eta_seconds"] = (t.max_iter - t.iter) * elapsed / done
            self.write(record)

    def write(self, record: Mapping[str, Any]) -> None:
        for w in self._writers:
            w.write(record)
        metrics = [(k, v) for k, v in record.items() if "/" in k and isinstance(v, float)]
        if self.enabled and metrics:
            # The first few on the console (per-class metrics can be many); all in the files.
            shown = ", ".join(f"{k}={v:.4g}" for k, v in metrics[:8])
            more = f" (+{len(metrics) - 8} more in metrics.jsonl)" if len(metrics) > 8 else ""
            logger.info("iteration %d: %s%s", record.get("iter", 0), shown, more)

    def after_train(self) -> None:
        if self.enabled and self.plot:
            for w in self._writers:
                if isinstance(w, JSONWriter):
                    w._f.flush()
            try:
                path = plot_metrics(self.output_dir / "metrics.jsonl", self.output_dir / "metrics.png")
                logger.info("curves: %s", path)
            except ValueError as e:  # nothing logged yet
                logger.warning("no curves drawn: %s", e)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        for w in self._writers:
            w.close()
        self._writers = []


class CheckpointHook(HookBase):
    """`model_{iter}.pth` + `last.pth` every `period` steps, `last.pth` at the end.

    The full trainer state is gathered on every process (RNG states), written by the
    main one.
    """

    def __init__(self, checkpointer: Checkpointer, period: int, extra: Mapping[str, Any] | None = None):
        self.checkpointer, self.period, self.extra = checkpointer, period, dict(extra or {})

    def _state(self) -> dict:
        return {**self.trainer.state_dict(), **self.extra}

    def after_step(self) -> None:
        t = self.trainer
        if self.period and t.iter % self.period == 0 and t.iter < t.max_iter:
            state = self._state()
            if comm.is_main_process():
                self.checkpointer.save_periodic(t.iter, state)
                self.checkpointer.save("last.pth", state)
            comm.synchronize()

    def on_interrupt(self) -> None:
        state = self._state()
        if comm.is_main_process():
            path = self.checkpointer.save("last.pth", state)
            logger.info("saved %s", path)
        comm.synchronize()

    def after_train(self) -> None:
        state = self._state()
        if comm.is_main_process():
            if self.period:
                self.checkpointer.save_periodic(self.trainer.iter, state)
            path = self.checkpointer.save("last.pth", state)
            logger.info("saved %s", path)
        comm.synchronize()


class EvalHook(HookBase):
    """Evaluate every `period` steps (0: only at the end) and keep `best.pth`.

    Args:
        eval_fn: `eval_fn() -> dict[str, float]`, run on every process.
        period: steps between evaluations; the last step always evaluates.
        best_metric: a key of the results (higher is better), or None.
        checkpointer: writes `best.pth` (needed with `best_metric`).
        extra: entries added to the best checkpoint (e.g. the config text).
    """

    def __init__(
        self,
        eval_fn: Callable[[], dict[str, float]],
        period: int = 0,
        best_metric: str | None = None,
        checkpointer: Checkpointer | None = None,
        extra: Mapping[str, Any] | None = None,
    ):
        self.eval_fn, self.period, self.best_metric = eval_fn, period, best_metric
        self.checkpointer, self.extra = checkpointer, dict(extra or {})
        self.results: dict[str, float] = {}

    def _evaluate(self) -> None:
        t = self.trainer
        results = comm.broadcast_object(self.eval_fn())
        self.results = results
        if not results:
            return
        t.log({"iter": t.iter, **results})
        if self.best_metric is None:
            return
        if self.best_metric not in results:
            raise KeyError(
                f"train.best_metric: {self.best_metric!r} is not among the metrics {sorted(results)}"
            )
        value = float(results[self.best_metric])
        if math.isfinite(value) and (t.best is None or value > t.best["value"]):
            t.best = {"metric": self.best_metric, "value": value, "iter": t.iter}
            state = {**t.state_dict(), **self.extra}
            if comm.is_main_process() and self.checkpointer is not None:
                self.checkpointer.save("best.pth", state)
                logger.info("new best %s = %.4f at iteration %d", self.best_metric, value, t.iter)
            comm.synchronize()

    def after_step(self) -> None:
        t = self.trainer
        if self.period and t.iter % self.period == 0 and t.iter < t.max_iter:
            self._evaluate()

    def after_train(self) -> None:
        self._evaluate()
