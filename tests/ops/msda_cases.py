"""Inputs of multi-scale deformable attention shared by the CPU and CUDA tests."""

from __future__ import annotations

import torch

ARG_NAMES = ("value", "spatial_shapes", "level_start_index", "sampling_locations", "attention_weights")


def make_inputs(
    levels: tuple[tuple[int, int], ...],
    heads: int,
    channels: int,
    queries: int,
    points: int,
    batch: int = 1,
    dtype: torch.dtype = torch.float64,
    outside: float = 0.3,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """Random value, locations in [-outside, 1 + outside] and positive weights."""
    gen = torch.Generator().manual_seed(seed)
    shapes = torch.tensor(levels, dtype=torch.int64).view(-1, 2)
    sizes = shapes.prod(1)
    starts = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])
    num_levels = shapes.shape[0]
    loc = torch.rand(batch, queries, heads, num_levels, points, 2, generator=gen, dtype=torch.float64)
    return {
        "value": torch.randn(batch, int(sizes.sum()), heads, channels, generator=gen, dtype=torch.float64).to(
            dtype
        ),
        "spatial_shapes": shapes,
        "level_start_index": starts,
        "sampling_locations": (loc * (1 + 2 * outside) - outside).to(dtype),
        "attention_weights": torch.rand(
            batch, queries, heads, num_levels, points, generator=gen, dtype=torch.float64
        ).to(dtype),
    }


def random_config(trial: int) -> dict:
    """Trial `trial` of a fixed random sweep: 1-5 levels (1x1 and odd sizes included),
    1-8 heads and points, channels not a power of two, batch 1-3."""
    gen = torch.Generator().manual_seed(100 + trial)

    def r(lo: int, hi: int) -> int:
        return int(torch.randint(lo, hi + 1, (), generator=gen))

    num_levels = 1 + trial % 5
    levels = [(r(1, 13), r(1, 13)) for _ in range(num_levels)]
    if trial % 3 == 0:
        levels[-1] = (1, 1)
    return {
        "levels": tuple(levels),
        "heads": r(1, 8),
        "channels": (3, 5, 7, 12, 33)[trial % 5],
        "queries": r(1, 20),
        "points": r(1, 8),
        "batch": r(1, 3),
        "seed": trial,
    }


def call(fn, t: dict) -> torch.Tensor:
    return fn(*(t[k] for k in ARG_NAMES))
