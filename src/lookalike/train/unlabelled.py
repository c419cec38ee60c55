"""Unlabelled images for semi- and self-supervised training: where they come from, how they are
drawn beside the labelled batches.

Sources (:class:`~lookalike.train.config.UnlabelledSpec`): the protocol's test query/gallery images
(``"split:test"``, transductive, as the distractor competition's winners used the unlabelled test
images), a folder of images (``"images:PATH"``), or any data source whose labels are dropped.
Whatever the sources, an image that trains or validates with its label never enters the
unlabelled stream.

:class:`UnlabelledSampler` gives the unlabelled stream exactly as many batches per epoch as the
labelled one, in an order fixed by ``(seed, epoch)``, cycling through the images as often as
needed, so that Lightning's ``CombinedLoader`` pairs every labelled batch with an unlabelled one.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Sampler

from lookalike.data.protocols import RetrievalSplit
from lookalike.data.records import ImageRecord, ImageSet
from lookalike.data.sources import list_images, load_source
from lookalike.train.sampler import TrainKey
from lookalike.train.seeding import mix_seed

logger = logging.getLogger(__name__)

IMAGES_PREFIX = "images:"
"""Spec prefix of a plain folder of images (any depth, folder names are not labels)."""
TEST_SPLIT = "split:test"
"""Spec of the protocol's test query and gallery images, used without their labels."""


def image_folder(root: str | os.PathLike[str]) -> ImageSet:
    """Every image under ``root`` (recursively, sorted), without labels; ids are the paths
    relative to ``root``.

    Raises:
        FileNotFoundError: ``root`` is not a folder.
        ValueError: It holds no images.
    """
    root = Path(root).absolute()
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist or is not a folder")
    paths = list_images(root)
    if not paths:
        raise ValueError(f"image folder {root} holds no images")
    return ImageSet([ImageRecord(path.relative_to(root).as_posix(), path) for path in paths])


def load_images(spec: Any) -> ImageSet:
    """A data source spec as :func:`~lookalike.data.sources.load_source` reads it, or
    ``"images:PATH"`` for a folder of unlabelled images."""
    if isinstance(spec, (str, os.PathLike)) and os.fspath(spec).startswith(IMAGES_PREFIX):
        return image_folder(os.fspath(spec)[len(IMAGES_PREFIX) :])
    if isinstance(spec, Mapping):
        return load_source(dict(spec))
    return load_source(spec)


def unlabelled_images(sources: Sequence[Any], split: RetrievalSplit) -> ImageSet:
    """The unlabelled training images of ``sources``, labels dropped, each image once.

    Args:
        sources: Specs as :class:`~lookalike.train.config.UnlabelledSpec` describes them.
        split: The training split: ``"split:test"`` reads its query and gallery; its train and
            val images are never unlabelled images.

    Raises:
        ValueError: The sources yield nothing once labelled images are left out.
    """
    labelled = {
        Path(record.path).resolve()
        for part in (split.train, split.val)
        if part is not None
        for record in part.records
    }
    seen: set[Path] = set()
    records: list[ImageRecord] = []
    for spec in sources:
        if spec == TEST_SPLIT:
            found = [*split.query.records, *split.gallery.records]
        else:
            found = list(load_images(spec).records)
        kept = 0
        for record in found:
            path = Path(record.path).resolve()
            if path in labelled or path in seen:
                continue
            seen.add(path)
            kept += 1
            records.append(ImageRecord(f"unlabelled/{len(records)}/{record.id}", record.path))
        logger.info("unlabelled source %r: %d new images", spec, kept)
    if not records:
        raise ValueError(
            f"the unlabelled sources {list(sources)} hold no image that is not labelled for "
            "training or validation"
        )
    return ImageSet(records, "unlabelled")


class UnlabelledSampler(Sampler[TrainKey]):
    """``batches`` batches of ``batch_size`` keys ``(epoch, index)`` per epoch over ``count``
    images: seeded permutations of all images, concatenated until enough are drawn.

    Args:
        count: Number of unlabelled images.
        batch_size: Images per unlabelled batch.
        batches: Batches per epoch (the labelled stream's, on this process).
        seed: Base seed (the order of epoch ``e`` is fixed by ``(seed, e)``).
        epoch: First epoch.
        rank: This process's rank under DDP.
        world_size: Processes under DDP; each takes every ``world_size``-th batch.
    """

    def __init__(
        self,
        count: int,
        batch_size: int,
        batches: int,
        seed: int,
        epoch: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if count < 1 or batch_size < 1 or batches < 0:
            raise ValueError(
                f"unlabelled sampler needs images and a batch size >= 1, got {count} and "
                f"{batch_size}"
            )
        self.count = count
        self.batch_size = batch_size
        self.batches = batches
        self.seed = seed
        self.epoch = epoch
        self.rank = rank
        self.world_size = world_size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.batches * self.batch_size

    def __iter__(self) -> Iterator[TrainKey]:
        needed = self.batches * self.batch_size * self.world_size
        order: list[int] = []
        for cycle in range(math.ceil(needed / self.count)):
            generator = torch.Generator().manual_seed(mix_seed(self.seed, self.epoch, cycle))
            order += torch.randperm(self.count, generator=generator).tolist()
        size = self.batch_size
        mine = [
            index
            for batch in range(self.rank, self.batches * self.world_size, self.world_size)
            for index in order[batch * size : (batch + 1) * size]
        ]
        return iter([(self.epoch, index) for index in mine])
