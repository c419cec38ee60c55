"""Epoch-keyed sampling: the order of epoch ``e`` is fixed by ``(seed, e)``.

The sampler yields ``(epoch, index)`` keys so that the dataset can seed each image's augmentation
from them (:mod:`lookalike.train.seeding`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler

from lookalike.train.seeding import mix_seed, numpy_seeded

TrainKey = tuple[int, ...]
"""``(epoch, index)``, or ``(epoch, index, repeat)`` for the ``repeat``-th further draw of an image
in its epoch (the m-per-class sampler draws a class of fewer than m images again): a repeat is
augmented under its own seed, so it is another view of the image, not a pixel-identical copy."""


class EpochSampler(Sampler[TrainKey]):
    """Yields ``(epoch, index)`` keys in an order fixed by ``(seed, epoch)``.

    Lightning calls :meth:`set_epoch` before every epoch (as for ``DistributedSampler``).

    Args:
        labels: ``(N,)`` integer class codes (used by "m_per_class").
        kind: "random" (a permutation) or "m_per_class" (pml's ``MPerClassSampler``).
        batch_size: Images per batch of one process ("m_per_class" fills whole batches).
        m: Images of each class per batch.
        seed: Base seed.
        epoch: First epoch (the one a resumed run starts at).
        rank: This process's rank under DDP.
        world_size: Processes under DDP. The order is drawn for the global batch of
            ``batch_size * world_size`` images, exactly as one process with that batch size
            draws it, and rank ``r`` takes the ``r``-th slice of each global batch: the ranks'
            batches of a step together are the single-process batch (so DDP trains as one
            process would), and with ``batch_size`` a multiple of ``m`` each slice holds whole
            classes, ``m`` images each (Lightning's own distributed sampler is off).
    """

    def __init__(
        self,
        labels: Sequence[int],
        kind: str,
        batch_size: int,
        m: int,
        seed: int,
        epoch: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.labels = list(labels)
        self.kind = kind
        self.seed = seed
        self.epoch = epoch
        self.rank = rank
        self.world_size = world_size
        self.batch_size = batch_size
        self.m = m
        if kind == "m_per_class":
            if batch_size < 1 or m < 1 or batch_size % m:
                raise ValueError(
                    f"m_per_class sampler: data.batch_size {batch_size} must be a positive "
                    f"multiple of data.m {m}"
                )
            classes = len(set(self.labels))
            global_batch = batch_size * world_size
            if classes * m < global_batch or len(self.labels) < global_batch:
                raise ValueError(
                    f"m_per_class sampler: {classes} classes x m={m} ({len(self.labels)} images) "
                    f"cannot fill a batch of {batch_size} x {world_size} processes; lower "
                    "data.batch_size or raise data.m"
                )
            self._length = len(self._m_per_class())
        elif kind == "random":
            self._length = len(self.labels)
        else:
            raise ValueError(f"unknown sampler {kind!r}; valid: random, m_per_class")

    def _m_per_class(self) -> Sampler[int]:
        # a new pml sampler per epoch: it shuffles its class list in place between iterations
        from pytorch_metric_learning.samplers import MPerClassSampler

        return MPerClassSampler(
            self.labels,
            self.m,
            batch_size=self.batch_size * self.world_size,
            length_before_new_iter=len(self.labels),
        )

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        if self.world_size == 1:
            return self._length
        return self._length // (self.batch_size * self.world_size) * self.batch_size

    def __iter__(self) -> Iterator[TrainKey]:
        seed = mix_seed(self.seed, self.epoch)
        if self.kind == "m_per_class":
            with numpy_seeded(seed):
                order = [int(i) for i in self._m_per_class()]
        else:
            generator = torch.Generator().manual_seed(seed)
            order = torch.randperm(len(self.labels), generator=generator).tolist()
        keys = _epoch_keys(self.epoch, order)  # counted over the global order: as on one process
        if self.world_size > 1:
            size = self.batch_size
            step = size * self.world_size
            keys = [
                key
                for start in range(0, len(keys) - step + 1, step)
                for key in keys[start + self.rank * size : start + (self.rank + 1) * size]
            ]
        return iter(keys)


def _epoch_keys(epoch: int, order: list[int]) -> list[TrainKey]:
    """The keys of ``order``: ``(epoch, index)`` at an image's first draw in the epoch,
    ``(epoch, index, repeat)`` at its ``repeat``-th further draw."""
    drawn: dict[int, int] = {}
    keys: list[TrainKey] = []
    for index in order:
        repeat = drawn.get(index, 0)
        drawn[index] = repeat + 1
        keys.append((epoch, index) if repeat == 0 else (epoch, index, repeat))
    return keys
