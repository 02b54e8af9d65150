"""The evaluator interface every task implements."""

from __future__ import annotations

from typing import Any

__all__ = ["DatasetEvaluator"]


class DatasetEvaluator:
    """Accumulates predictions batch by batch, then computes metrics.

    Works across processes: `process` sees only this process's shard; `evaluate`
    gathers (e.g. with `densenets.utils.comm.all_gather_object`) and returns the
    metrics on every rank (or an empty dict on non-main ranks).

    Constructors take `dataset` (the evaluated dataset, for metadata such as class
    names or ground truth) and `output_dir` (where result files go, or None) as
    keywords, plus their own options from the config.
    """

    def reset(self) -> None:
        raise NotImplementedError

    def process(self, batch: list[dict[str, Any]], predictions: list[dict[str, Any]]) -> None:
        """Record one batch: `batch` as given to the model, `predictions` as it returned."""
        raise NotImplementedError

    def evaluate(self) -> dict[str, float]:
        """Metrics as a flat dict of floats (e.g. ``{"bbox/AP": 37.9}``)."""
        raise NotImplementedError
