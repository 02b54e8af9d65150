"""Exponential moving average of a model's weights."""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

__all__ = ["ModelEMA"]


class ModelEMA:
    """Keeps `ema = d × ema + (1 − d) × weights` after every optimiser step.

    Floating-point parameters and buffers are averaged; integer buffers (e.g.
    `num_batches_tracked`) are copied. With `warmup > 0`, the decay at update `n` is
    `decay × (1 − exp(−n / warmup))`, so early averages follow the weights closely.

    Args:
        model: the (unwrapped) model to average; a deep copy is kept, in eval mode.
        decay: the decay d in (0, 1).
        warmup: decay ramp-up in updates (0: none).
    """

    def __init__(self, model: nn.Module, decay: float = 0.9998, warmup: int = 0) -> None:
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay, self.warmup, self.updates = decay, warmup, 0

    def current_decay(self) -> float:
        if self.warmup <= 0:
            return self.decay
        return self.decay * (1 - math.exp(-self.updates / self.warmup))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = self.current_decay()
        current = model.state_dict()
        for name, avg in self.module.state_dict().items():
            value = current[name].detach()
            if avg.dtype.is_floating_point:
                avg.lerp_(value.to(avg.dtype), 1.0 - d)
            else:
                avg.copy_(value)

    def state_dict(self) -> dict:
        return {"module": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["module"])
        self.updates = int(state["updates"])
