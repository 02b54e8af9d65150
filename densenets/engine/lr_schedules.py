"""LR curves: `train.scheduler.type` names one of the classes here (`SCHEDULES`), and
`train.scheduler.warmup_method` one of the warmups (`WARMUPS`).

A schedule is a small frozen object, called as ``schedule(it, max_iter)`` for the factor
that multiplies the base LR after `it` optimiser steps of a run of `max_iter`.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction

__all__ = ["MultiStepLR", "CosineLR", "PolyLR", "ConstantLR", "SCHEDULES", "WARMUPS", "epoch_to_iter"]


@dataclass(frozen=True)
class MultiStepLR:
    """x `gamma` at each of `steps` (iterations, increasing)."""

    steps: Sequence[int] = ()
    gamma: float = 0.1

    def __call__(self, it: int, max_iter: int) -> float:
        return self.gamma ** bisect.bisect_right(self.steps, it)


@dataclass(frozen=True)
class CosineLR:
    """Half a cosine from 1 down to `min_factor` at `max_iter`."""

    min_factor: float = 0.0

    def __call__(self, it: int, max_iter: int) -> float:
        t = min(it, max_iter) / max(max_iter, 1)
        return self.min_factor + (1 - self.min_factor) * 0.5 * (1 + math.cos(math.pi * t))


@dataclass(frozen=True)
class PolyLR:
    """``(1 - t) ** power`` from 1 down to `min_factor` at `max_iter` (t = it / max_iter)."""

    power: float = 0.9
    min_factor: float = 0.0

    def __call__(self, it: int, max_iter: int) -> float:
        t = min(it, max_iter) / max(max_iter, 1)
        return self.min_factor + (1 - self.min_factor) * (1 - t) ** self.power


@dataclass(frozen=True)
class ConstantLR:
    """The base LR throughout."""

    def __call__(self, it: int, max_iter: int) -> float:
        return 1.0


SCHEDULES: dict[str, type] = {cls.__name__: cls for cls in (MultiStepLR, CosineLR, PolyLR, ConstantLR)}

# Warmup factor at fraction `alpha` (= it / warmup_iters, in [0, 1)) of the warmup.
WARMUPS: dict[str, Callable[[float, float], float]] = {
    "linear": lambda alpha, factor: factor * (1 - alpha) + alpha,
    "constant": lambda alpha, factor: factor,
}


def epoch_to_iter(epochs: float, iters_per_epoch: Fraction | float) -> int:
    """The iteration at which `epochs` epochs end, ``ceil(epochs * iters_per_epoch)`` in
    exact arithmetic: how `train.epochs` and epoch milestones become iterations, with
    ``iters_per_epoch = Fraction(len(train set), batch_size)``."""
    return math.ceil(Fraction(epochs) * Fraction(iters_per_epoch))
