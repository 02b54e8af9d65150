"""Stochastic depth: drop a whole residual branch per sample (Huang et al., 2016)."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["DropPath", "drop_path"]


def drop_path(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Zero each sample's `x` with probability `p`, scaling survivors by ``1 / (1 - p)``.

    Args:
        x (Tensor[N, ...]): a residual branch's output.
        p: drop probability in [0, 1).
        training: identity when False.

    Returns:
        Tensor[N, ...] with the same shape; the expectation over the mask equals `x`.
    """
    if p == 0.0 or not training:
        return x
    keep = 1.0 - p
    mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
    return x * mask.div_(keep)


class DropPath(nn.Module):
    """Module form of `drop_path`; `p` is the drop probability."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"drop_path: probability must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return drop_path(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"
