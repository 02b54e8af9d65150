"""Run a model over a dataset and evaluate its predictions, on every process."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from densenets.evaluation import DatasetEvaluator
from densenets.utils import comm

__all__ = ["inference_on_dataset"]

logger = logging.getLogger(__name__)


def inference_on_dataset(
    model: nn.Module,
    loader: Iterable[list[dict[str, Any]]],
    evaluator: DatasetEvaluator,
    amp: str | None = None,
    progress: bool = True,
) -> dict[str, float]:
    """Predict every batch of `loader` (this process's shard) and evaluate.

    The model runs in eval mode under `torch.no_grad` and gets its previous mode back.

    Args:
        model: maps a batch (list of item dicts) to a list of prediction dicts.
        loader: this process's batches (`build_test_loader`).
        evaluator: processes batches; its `evaluate` gathers over processes.
        amp: None, "float16" or "bfloat16" autocast.
        progress: show a progress bar on the main process.

    Returns:
        The evaluator's metrics (may be empty on processes other than the main one).
    """
    evaluator.reset()
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    dtype = {"float16": torch.float16, "bfloat16": torch.bfloat16}.get(amp or "")
    autocast = torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext()
    total = len(loader) if hasattr(loader, "__len__") else None
    bar = tqdm(loader, total=total, desc="eval", disable=not (progress and comm.is_main_process()), leave=False)
    start, count = time.perf_counter(), 0
    try:
        with torch.no_grad(), autocast:
            for count, batch in enumerate(bar, 1):  # noqa: B007 - count is reported below
                predictions = model(batch)
                if len(predictions) != len(batch):
                    raise ValueError(f"the model returned {len(predictions)} predictions for {len(batch)} inputs")
                evaluator.process(batch, predictions)
    finally:
        bar.close()
        model.train(was_training)
    comm.synchronize()
    results = evaluator.evaluate() or {}
    logger.info("evaluated %d batches in %.1f s", count, time.perf_counter() - start)
    return results
