"""Review of the epoch-keyed sampler: m per class, small classes, resume, DDP shards, lengths."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from torch.utils.data import DataLoader

from lookalike.train.sampler import EpochSampler


def indices(sampler: EpochSampler) -> list[int]:
    return [index for _, index, *_ in sampler]


def test_classes_smaller_than_m_fill_their_m_slots_by_drawing_again() -> None:
    # pml's MPerClassSampler draws with replacement from a class with fewer than m images
    labels = [0] + [1] * 2 + [2] * 5 + [3] * 5
    m, batch = 3, 6
    order = indices(EpochSampler(labels, "m_per_class", batch_size=batch, m=m, seed=4))
    assert len(order) == len(labels) // batch * batch
    for start in range(0, len(order), batch):
        chunk = order[start : start + batch]
        for slot in range(0, batch, m):  # the batch is whole classes, m consecutive slots each
            group = chunk[slot : slot + m]
            assert len({labels[i] for i in group}) == 1
            owner = labels[group[0]]
            if labels.count(owner) >= m:
                assert len(set(group)) == m  # no repeat while the class has m images


@pytest.mark.parametrize("kind", ["random", "m_per_class"])
def test_a_resumed_run_draws_the_same_batches(kind: str) -> None:
    labels = [c for c in range(6) for _ in range(5)]
    run = EpochSampler(labels, kind, batch_size=6, m=3, seed=11)
    epochs = []
    for epoch in range(3):
        run.set_epoch(epoch)
        epochs.append(indices(run))
    assert epochs[0] != epochs[1] != epochs[2]  # reseeded every epoch
    np.random.seed(5)  # the global numpy state a resumed process happens to have
    state = np.random.get_state()[1].copy()
    resumed = EpochSampler(labels, kind, batch_size=6, m=3, seed=11, epoch=2)
    assert indices(resumed) == epochs[2]
    assert (np.random.get_state()[1] == state).all()  # left as it was


@pytest.mark.parametrize("kind", ["random", "m_per_class"])
@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_length_is_what_iterates_and_ranks_are_disjoint(kind: str, world_size: int) -> None:
    labels = [c for c in range(7) for _ in range(5)]  # 35 images: no multiple of any batch
    shards = [
        indices(EpochSampler(labels, kind, 4, 2, seed=2, epoch=1, rank=r, world_size=world_size))
        for r in range(world_size)
    ]
    length = len(EpochSampler(labels, kind, 4, 2, seed=2, epoch=1, world_size=world_size))
    assert all(len(shard) == length for shard in shards)
    if world_size > 1:
        assert length % 4 == 0  # whole batches on every rank: no rank runs a step more
        whole = indices(EpochSampler(labels, kind, 4 * world_size, 2, seed=2, epoch=1))
        for step in range(0, length, 4):
            positions = [shard[step : step + 4] for shard in shards]
            start = step * world_size
            assert [i for part in positions for i in part] == whole[start : start + 4 * world_size]
    if kind == "random" and world_size == 1:  # the loader drops the last, partial batch
        loader = DataLoader(
            range(35),
            batch_size=4,
            drop_last=True,
            sampler=[i for _, i, *_ in EpochSampler(labels, kind, 4, 2, seed=2)],
        )
        assert [len(batch) for batch in loader] == [4] * 8


@pytest.mark.parametrize(("batch_size", "m"), [(6, 4), (0, 2), (4, 0)])
def test_batch_size_not_a_multiple_of_m_is_a_one_line_error(batch_size: int, m: int) -> None:
    labels = [c for c in range(5) for _ in range(7)]
    with pytest.raises(
        ValueError,
        match=rf"^m_per_class sampler: data.batch_size {batch_size} "
        rf"must be a positive multiple of data.m {m}$",
    ):
        EpochSampler(labels, "m_per_class", batch_size=batch_size, m=m, seed=0)


def test_m_per_class_under_ddp_gives_each_rank_whole_classes() -> None:
    labels = [c for c in range(8) for _ in range(3)] + [8]  # one single-image class
    for rank in range(2):
        shard = indices(EpochSampler(labels, "m_per_class", 4, 2, seed=0, rank=rank, world_size=2))
        for step in range(0, len(shard), 4):
            counts = Counter(labels[i] for i in shard[step : step + 4])
            assert sorted(counts.values()) == [2, 2]
