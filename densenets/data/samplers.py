"""Samplers: an infinite, seeded training stream sharded over processes; an inference
split; aspect-ratio grouped batches.

The training order is a pure function of (seed, position): position `g` of the global
stream is item `perm_e[g % n]` with `e = g // n` and `perm_e` a permutation seeded by
`(seed, e)`. Process `r` of `W` takes positions `r, r + W, r + 2W, ...`, so one process
with batch B sees exactly the items that W processes with batch B / W see together,
and a resumed run starts at `start_iter × batch` without replaying anything.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler

from densenets.utils import comm

__all__ = ["TrainingSampler", "InferenceSampler", "GroupedBatchSampler"]


class TrainingSampler(Sampler[tuple[int, int]]):
    """Infinite stream of `(global position, dataset index)` pairs for this process.

    The position lets the loader seed each item's augmentation (`data/loader.py`).

    Args:
        size: dataset length.
        shuffle: a new permutation each epoch (else 0..n-1 repeated).
        seed: the permutations' seed; the same on every process.
        start: global stream position to start from (e.g. iterations done × batch).
        rank, world_size: this process's shard (default: from torch.distributed).
    """

    def __init__(
        self,
        size: int,
        shuffle: bool = True,
        seed: int = 0,
        start: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        if size <= 0:
            raise ValueError(f"TrainingSampler: the dataset is empty (size={size})")
        self.size, self.shuffle, self.seed, self.start = size, shuffle, seed, start
        self.rank = comm.get_rank() if rank is None else rank
        self.world_size = comm.get_world_size() if world_size is None else world_size

    def _epoch_order(self, epoch: int) -> list[int]:
        if not self.shuffle:
            return list(range(self.size))
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.size, generator=g).tolist()

    def __iter__(self) -> Iterator[tuple[int, int]]:
        pos = self.start + self.rank
        epoch, order = pos // self.size, None
        while True:
            e = pos // self.size
            if order is None or e != epoch:
                epoch, order = e, self._epoch_order(e)
            yield pos, order[pos % self.size]
            pos += self.world_size


class InferenceSampler(Sampler[int]):
    """Each item exactly once over all processes: process r takes a contiguous slice."""

    def __init__(self, size: int, rank: int | None = None, world_size: int | None = None) -> None:
        rank = comm.get_rank() if rank is None else rank
        world_size = comm.get_world_size() if world_size is None else world_size
        per, extra = divmod(size, world_size)
        begin = rank * per + min(rank, extra)
        self.indices = range(begin, begin + per + (rank < extra))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class GroupedBatchSampler:
    """Batches of indices whose images share an orientation (w >= h or w < h).

    Args:
        sampler: an (infinite) stream of `(position, index)` pairs (a TrainingSampler).
        aspect_ratios: width / height per dataset item.
        batch_size: indices per batch (this process's share).
        skip: batches to drop at the start: resuming replays the grouping up to there,
            which touches indices only, never images.
    """

    def __init__(self, sampler: Sampler[tuple[int, int]], aspect_ratios: Sequence[float], batch_size: int, skip: int = 0):
        self.sampler, self.batch_size, self.skip = sampler, batch_size, skip
        self.group_ids = [int(r < 1.0) for r in aspect_ratios]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        buckets: list[list[tuple[int, int]]] = [[], []]
        made = 0
        for pair in self.sampler:
            bucket = buckets[self.group_ids[pair[1]]]
            bucket.append(pair)
            if len(bucket) == self.batch_size:
                if made >= self.skip:
                    yield bucket[:]
                made += 1
                del bucket[:]
