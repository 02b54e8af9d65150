"""Samplers and loaders: sharding, seeding, resuming mid-stream, aspect-ratio grouping."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from densenets.data.loader import build_test_loader, build_train_loader
from densenets.data.samplers import GroupedBatchSampler, InferenceSampler, TrainingSampler


def take(it, n):
    return list(itertools.islice(it, n))


def test_training_stream_is_a_permutation_per_epoch_and_seeded():
    pairs = take(iter(TrainingSampler(10, seed=3, rank=0, world_size=1)), 30)
    assert [p for p, _ in pairs] == list(range(30))
    for e in range(3):
        assert sorted(i for _, i in pairs[10 * e : 10 * e + 10]) == list(range(10))
    assert [i for _, i in pairs[:10]] != [i for _, i in pairs[10:20]]  # reshuffled each epoch
    again = take(iter(TrainingSampler(10, seed=3, rank=0, world_size=1)), 30)
    other = take(iter(TrainingSampler(10, seed=4, rank=0, world_size=1)), 30)
    assert pairs == again and pairs != other


def test_shards_interleave_to_the_single_process_stream():
    one = take(iter(TrainingSampler(7, seed=1, rank=0, world_size=1)), 24)
    r0 = take(iter(TrainingSampler(7, seed=1, rank=0, world_size=2)), 12)
    r1 = take(iter(TrainingSampler(7, seed=1, rank=1, world_size=2)), 12)
    assert sorted(r0 + r1) == sorted(one)
    assert [p for p, _ in r0] == list(range(0, 24, 2))


def test_start_continues_the_stream():
    full = take(iter(TrainingSampler(9, seed=2, rank=1, world_size=2)), 20)
    resumed = take(iter(TrainingSampler(9, seed=2, start=16, rank=1, world_size=2)), 12)
    assert resumed == full[8:]


def test_inference_sampler_covers_each_item_once():
    parts = [list(InferenceSampler(10, rank=r, world_size=3)) for r in range(3)]
    assert parts == [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]
    assert list(InferenceSampler(2, rank=2, world_size=3)) == []


def test_grouped_batches_share_orientation_and_skip_replays():
    ratios = [1.5 if i % 3 else 0.6 for i in range(20)]
    sampler = TrainingSampler(20, seed=0, rank=0, world_size=1)
    batches = take(iter(GroupedBatchSampler(sampler, ratios, 4)), 12)
    for b in batches:
        assert len(b) == 4 and len({ratios[i] >= 1 for _, i in b}) == 1
    skipped = take(iter(GroupedBatchSampler(sampler, ratios, 4, skip=5)), 7)
    assert skipped == batches[5:]


class _Noisy(Dataset):
    """Items draw from numpy's and torch's global generators, like random augmentation."""

    aspect_ratios = None

    def __len__(self):
        return 6

    def __getitem__(self, i):
        return {"i": i, "np": float(np.random.rand()), "torch": float(torch.rand(()))}


@pytest.mark.parametrize("workers", [0, 2])
def test_augmentation_randomness_follows_the_stream_position(workers):
    def first(loader, n):
        return take(iter(loader), n)

    ref = first(build_train_loader(_Noisy(), 2, seed=5, num_workers=0), 6)
    got = first(build_train_loader(_Noisy(), 2, seed=5, num_workers=workers), 6)
    assert got == ref
    # Resuming at step 2 gives the same items with the same random draws.
    resumed = first(build_train_loader(_Noisy(), 2, seed=5, start_iter=2, num_workers=workers), 4)
    assert resumed == ref[2:]
    assert all(isinstance(b, list) and isinstance(b[0], dict) for b in ref)  # collate = list
    assert len({it["np"] for b in ref for it in b}) == 12  # different per position


def test_per_process_batch_must_divide():
    with pytest.raises(ValueError, match=r"train.batch_size=6 must be divisible by world_size × accumulate = 1 × 4"):
        build_train_loader(_Noisy(), 6, accumulate=4, num_workers=0)


def test_test_loader_visits_everything_in_order():
    batches = list(build_test_loader(_Noisy(), batch_size=4, num_workers=0))
    assert [[it["i"] for it in b] for b in batches] == [[0, 1, 2, 3], [4, 5]]
