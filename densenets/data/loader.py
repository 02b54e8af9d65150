"""Data loaders: batches are plain lists of item dicts (collate = identity).

Training items are seeded by their position in the global stream: before item `g` is
read, python's `random`, numpy's and torch's global generators and every transform
with a generator of its own (`seeding.seed_transforms`: the dataset's, its
`transforms`', each Albumentations pipeline's) are seeded from `(seed, g)`. Random
augmentation thus depends neither on the number of workers or processes nor on where
a run was resumed. Loader workers run in a process group of their own, so Ctrl-C
reaches only the main process, which decides how training stops (`engine/launch.py`).
"""

from __future__ import annotations

import os
import random
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset

from densenets.utils import comm

from .samplers import GroupedBatchSampler, InferenceSampler, TrainingSampler
from .seeding import seed_transforms

__all__ = ["build_train_loader", "build_test_loader", "list_collate", "seed_everything"]


def list_collate(batch: list[Any]) -> list[Any]:
    """The batch is the list of items itself."""
    return batch


def seed_everything(seed: int) -> None:
    """Seed python's `random`, numpy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class _PositionSeeded(Dataset):
    """Reads `dataset[index]` for a `(position, index)` pair after seeding from `(seed, position)`."""

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset, self.seed = dataset, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        position, index = key
        item_seed = (self.seed * 0x9E3779B1 + position) % 2**63
        seed_everything(item_seed)
        seed_transforms(self.dataset, item_seed % 2**32)
        return self.dataset[index]


def _own_process_group(worker_id: int) -> None:
    """Move a loader worker out of the terminal's process group: Ctrl-C (or a signal to
    the whole group) reaches the main process only, which stops training cleanly and
    then ends the workers itself."""
    if hasattr(os, "setpgid"):
        os.setpgid(0, 0)


def _per_process_batch(batch_size: int, accumulate: int) -> int:
    world = comm.get_world_size()
    if batch_size % (world * accumulate):
        raise ValueError(
            f"train.batch_size={batch_size} must be divisible by world_size × accumulate = "
            f"{world} × {accumulate}"
        )
    return batch_size // (world * accumulate)


def build_train_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    accumulate: int = 1,
    seed: int = 0,
    start_iter: int = 0,
    num_workers: int = 2,
    aspect_ratio_grouping: bool = True,
    shuffle: bool = True,
) -> DataLoader:
    """An infinite loader of this process's micro-batches.

    Args:
        dataset: items are dicts; may expose `aspect_ratios` (width / height per item).
        batch_size: images per optimiser step, total over processes and `accumulate`
            micro-batches; each loader batch holds `batch_size / (world × accumulate)`.
        accumulate: micro-batches per optimiser step.
        seed: data order and augmentation seed (the same on every process).
        start_iter: optimiser steps already done (resuming): the stream continues there.
        num_workers: loader worker processes.
        aspect_ratio_grouping: group by orientation when the dataset has `aspect_ratios`.
        shuffle: a new permutation every epoch.

    Returns:
        A DataLoader whose iterator never ends; each batch is a list of item dicts.
    """
    micro = _per_process_batch(batch_size, accumulate)
    ratios: Sequence[float] | None = getattr(dataset, "aspect_ratios", None)
    if aspect_ratio_grouping and ratios is not None:
        if len(ratios) != len(dataset):
            raise ValueError(
                f"{type(dataset).__name__}.aspect_ratios has {len(ratios)} entries for {len(dataset)} items"
            )
        # Grouping changes which positions share a batch, so each process groups its
        # own stream from the start and the resumed part skips the batches already used.
        sampler = TrainingSampler(len(dataset), shuffle=shuffle, seed=seed)
        batches: Any = GroupedBatchSampler(sampler, ratios, micro, skip=start_iter * accumulate)
    else:
        sampler = TrainingSampler(len(dataset), shuffle=shuffle, seed=seed, start=start_iter * batch_size)
        batches = BatchSampler(sampler, micro, drop_last=True)
    return DataLoader(
        _PositionSeeded(dataset, seed),
        batch_sampler=batches,
        num_workers=num_workers,
        collate_fn=list_collate,
        persistent_workers=num_workers > 0,
        worker_init_fn=_own_process_group if num_workers > 0 else None,
        # Its own generator: creating the loader (e.g. when resuming) must not draw from
        # the global RNG that the model's dropout uses.
        generator=torch.Generator().manual_seed(seed),
    )


def build_test_loader(dataset: Dataset, batch_size: int = 1, num_workers: int = 2) -> DataLoader:
    """A loader that visits this process's share of `dataset` once, in order.

    Args:
        batch_size: total over processes (each gets `max(1, batch_size // world)`).
    """
    per_process = max(1, batch_size // comm.get_world_size())
    sampler = BatchSampler(InferenceSampler(len(dataset)), per_process, drop_last=False)
    return DataLoader(dataset, batch_sampler=sampler, num_workers=num_workers, collate_fn=list_collate)
