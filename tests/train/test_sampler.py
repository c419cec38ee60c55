"""Epoch-keyed sampling: orders fixed by (seed, epoch), M-per-class batches, DDP shards."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from lookalike.train.sampler import EpochSampler


def test_random_sampler_order_depends_only_on_seed_and_epoch() -> None:
    sampler = EpochSampler([0] * 20, "random", batch_size=4, m=1, seed=3)
    first = list(sampler)
    torch.manual_seed(123)  # the global generator must not matter
    assert list(sampler) == first
    assert sorted(index for _, index, *_ in first) == list(range(20))
    assert {epoch for epoch, _ in first} == {0}
    sampler.set_epoch(1)
    second = list(sampler)
    assert [i for _, i, *_ in second] != [i for _, i, *_ in first]
    assert list(EpochSampler([0] * 20, "random", 4, 1, seed=3, epoch=1)) == second


def test_m_per_class_sampler_fills_batches_with_m_of_each_class() -> None:
    labels = [c for c in range(5) for _ in range(7)]
    sampler = EpochSampler(labels, "m_per_class", batch_size=6, m=2, seed=0)
    order = [index for _, index, *_ in sampler]
    assert len(order) == len(sampler) == 30
    for start in range(0, len(order), 6):
        counts = Counter(labels[i] for i in order[start : start + 6])
        assert sorted(counts.values()) == [2, 2, 2]
    np.random.seed(99)
    assert [index for _, index, *_ in sampler] == order
    with pytest.raises(ValueError, match="cannot fill a batch"):
        EpochSampler([0, 0, 1, 1], "m_per_class", batch_size=8, m=2, seed=0)


@pytest.mark.parametrize("kind", ["random", "m_per_class"])
def test_ddp_ranks_split_each_single_process_batch(kind: str) -> None:
    # 2 processes x 4 images: each step's two rank batches are, in rank order, the batch of 8
    # that one process with batch_size 8 draws (so DDP trains on the same global batches)
    labels = [c for c in range(4) for _ in range(9)]
    whole = [i for _, i, *_ in EpochSampler(labels, kind, 8, 2, seed=1, epoch=3)]
    shards = [
        [i for _, i, *_ in EpochSampler(labels, kind, 4, 2, seed=1, epoch=3, rank=r, world_size=2)]
        for r in range(2)
    ]
    assert len(shards[0]) == len(shards[1]) == 16
    steps = [shards[r][step : step + 4] for step in range(0, 16, 4) for r in range(2)]
    assert [i for batch in steps for i in batch] == whole[:32]  # a last partial batch is dropped
    if kind == "m_per_class":  # each rank's batch holds whole classes, m=2 images each
        for shard in shards:
            for step in range(0, 16, 4):
                counts = Counter(labels[i] for i in shard[step : step + 4])
                assert sorted(counts.values()) == [2, 2]
    with pytest.raises(ValueError, match="cannot fill a batch of 8 x 2"):
        EpochSampler(labels, "m_per_class", 8, 2, seed=1, rank=0, world_size=2)
