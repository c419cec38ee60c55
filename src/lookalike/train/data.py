"""Training and validation data: augmented batches by epoch-keyed seeds, and a retrieval val set.

Every random draw of the input pipeline is a function of ``(seed, epoch, image index)``: the
sampler orders epoch ``e`` from a generator seeded by ``(seed, e)`` and each image is augmented
under a torch seed derived from ``(seed, e, index)``. Worker processes, resuming from a checkpoint
or sharding over DDP ranks therefore never change which batch a step sees or how it is augmented.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import lightning as L
import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler
from torchvision.transforms import v2

from lookalike.data.dataset import ImageDataset, collate_skipping_broken
from lookalike.data.loading import BrokenImageError, load_image
from lookalike.data.protocols import RetrievalSplit, make_split
from lookalike.data.records import ImageSet, label_codes
from lookalike.data.sources import load_source
from lookalike.models.preprocessing import Preprocessing, eval_transform
from lookalike.train.config import DataSpec

logger = logging.getLogger(__name__)

TrainKey = tuple[int, int]


def train_transform(preprocessing: Preprocessing, augment: str) -> v2.Compose:
    """PIL RGB image -> augmented ``(3, S, S)`` tensor normalised as ``preprocessing`` says.

    Args:
        preprocessing: The model's input size, mean and std.
        augment: "weak" (random resized crop at scale 0.35-1 and horizontal flip), "strong"
            (SimCLR's set: crop at scale 0.08-1, flip, colour jitter, grayscale, blur; Chen et al.
            2020) or "none" (the eval transform).
    """
    if augment == "none":
        return eval_transform(preprocessing)
    size = preprocessing.input_size
    if augment == "weak":
        geometry: list[Any] = [
            v2.RandomResizedCrop(size, scale=(0.35, 1.0), antialias=True),
            v2.RandomHorizontalFlip(),
        ]
    elif augment == "strong":
        geometry = [
            v2.RandomResizedCrop(size, scale=(0.08, 1.0), antialias=True),
            v2.RandomHorizontalFlip(),
            v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
            v2.RandomGrayscale(p=0.2),
            v2.RandomApply([v2.GaussianBlur(kernel_size=2 * (size // 20) + 1)], p=0.5),
        ]
    else:
        raise ValueError(f"unknown augment {augment!r}; valid: weak, strong, none")
    return v2.Compose(
        [
            v2.ToImage(),
            *geometry,
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(list(preprocessing.mean), list(preprocessing.std)),
        ]
    )


def mix_seed(*values: int) -> int:
    """A 63-bit seed from integers (polynomial hash with a large odd multiplier)."""
    seed = 0
    for value in values:
        seed = (seed * 0x9E3779B97F4A7C15 + int(value) + 1) % (1 << 63)
    return seed


@contextmanager
def _numpy_seeded(seed: int) -> Iterator[None]:
    """Seed numpy's global generator (pml's samplers draw from it) and restore it afterwards."""
    state = np.random.get_state()
    np.random.seed(seed % (1 << 32))
    try:
        yield
    finally:
        np.random.set_state(state)


class EpochSampler(Sampler[TrainKey]):
    """Yields ``(epoch, index)`` keys in an order fixed by ``(seed, epoch)``.

    Lightning calls :meth:`set_epoch` before every epoch (as for ``DistributedSampler``).

    Args:
        labels: ``(N,)`` integer class codes (used by "m_per_class").
        kind: "random" (a permutation) or "m_per_class" (pml's ``MPerClassSampler``).
        batch_size: Images per batch ("m_per_class" fills whole batches).
        m: Images of each class per batch.
        seed: Base seed.
        epoch: First epoch (the one a resumed run starts at).
        rank: This process's rank under DDP.
        world_size: Processes under DDP; each takes every ``world_size``-th whole batch, so
            M-per-class batches stay intact (Lightning's own distributed sampler is off).
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
            classes = len(set(self.labels))
            if classes * m < batch_size or len(self.labels) < batch_size:
                raise ValueError(
                    f"m_per_class sampler: {classes} classes x m={m} ({len(self.labels)} images) "
                    f"cannot fill a batch of {batch_size}; lower data.batch_size or raise data.m"
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
            self.labels, self.m, batch_size=self.batch_size, length_before_new_iter=len(self.labels)
        )

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        if self.world_size == 1:
            return self._length
        return self._length // self.batch_size // self.world_size * self.batch_size

    def __iter__(self) -> Iterator[TrainKey]:
        seed = mix_seed(self.seed, self.epoch)
        if self.kind == "m_per_class":
            with _numpy_seeded(seed):
                order = [int(i) for i in self._m_per_class()]
        else:
            generator = torch.Generator().manual_seed(seed)
            order = torch.randperm(len(self.labels), generator=generator).tolist()
        if self.world_size > 1:
            size = self.batch_size
            batches = [order[i : i + size] for i in range(0, len(order) - size + 1, size)]
            usable = len(batches) // self.world_size * self.world_size
            order = [i for batch in batches[self.rank : usable : self.world_size] for i in batch]
        return iter([(self.epoch, index) for index in order])


class TrainDataset(Dataset[dict[str, Any] | None]):
    """Augmented training images with their class codes, captions or second views.

    Args:
        images: The training records.
        transform: PIL image -> ``(3, S, S)`` augmented tensor.
        labels: ``(N,)`` class codes, or ``None`` for unlabelled data.
        with_text: Return each record's caption.
        two_views: Return a second augmented view of each image.
        seed: Base seed of the augmentations.

    Items are dicts with ``image`` ``(3, S, S)``, ``index`` and, as configured, ``label``,
    ``caption`` and ``view`` ``(3, S, S)``; ``None`` for an unreadable image.
    """

    def __init__(
        self,
        images: ImageSet,
        transform: Callable[[Image.Image], torch.Tensor],
        labels: Sequence[int] | None,
        with_text: bool = False,
        two_views: bool = False,
        seed: int = 0,
    ) -> None:
        self.images = images
        self.transform = transform
        self.labels = None if labels is None else list(labels)
        self.with_text = with_text
        self.two_views = two_views
        self.seed = seed

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key: TrainKey | int) -> dict[str, Any] | None:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        record = self.images[index]
        try:
            image = load_image(record.path)
        except BrokenImageError as error:
            logger.warning("skipping training image %s: %s", error.path, error.reason)
            return None
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(mix_seed(self.seed, epoch, index))
            item: dict[str, Any] = {"image": self.transform(image), "index": index}
            if self.two_views:
                item["view"] = self.transform(image)
        if self.labels is not None:
            item["label"] = self.labels[index]
        if self.with_text:
            item["caption"] = record.caption or ""
        return item


def collate_train(batch: Sequence[dict[str, Any] | None]) -> dict[str, Any]:
    """Stack the readable items: ``images`` ``(B, 3, S, S)``, ``indices`` ``(B,)`` and, when
    present, ``labels`` ``(B,)`` int64, ``views`` ``(B, 3, S, S)``, ``captions`` (B strings)."""
    items = [item for item in batch if item is not None]
    if not items:
        return {"images": None, "indices": torch.zeros(0, dtype=torch.int64)}
    out: dict[str, Any] = {
        "images": torch.stack([item["image"] for item in items]),
        "indices": torch.tensor([item["index"] for item in items], dtype=torch.int64),
    }
    if "label" in items[0]:
        out["labels"] = torch.tensor([item["label"] for item in items], dtype=torch.int64)
    if "view" in items[0]:
        out["views"] = torch.stack([item["view"] for item in items])
    if "caption" in items[0]:
        out["captions"] = [item["caption"] for item in items]
    return out


@dataclass
class ValidationSet:
    """A retrieval evaluation embedded in one pass.

    Attributes:
        images: The distinct images to embed (gallery first, then queries not in the gallery).
        labels: Label of each row of ``images``.
        query_rows: ``(Q,)`` rows of ``images`` that are queries.
        gallery_rows: ``(N,)`` rows of ``images`` that form the gallery.
        exclude_self: Queries are in the gallery and must not retrieve their own image.
    """

    images: ImageSet
    labels: list[str | None]
    query_rows: np.ndarray
    gallery_rows: np.ndarray
    exclude_self: bool


def validation_set(split: RetrievalSplit, which: str) -> ValidationSet | None:
    """The val set of ``split`` ("val": its ``val`` images all-vs-all; "test": its query and
    gallery; "none": ``None``)."""
    if which == "none":
        return None
    if which == "val":
        if split.val is None or not len(split.val):
            raise ValueError(
                "data.val_split is 'val' but the split has no val images; set "
                "data.protocol_args.val_fraction (class_disjoint), give a val split column, "
                "or set data.val_split to 'test' or 'none'"
            )
        gallery = split.val
        query = ImageSet([r for r in split.val.records if r.label is not None], "query")
        exclude_self = True
    elif which == "test":
        gallery, query, exclude_self = split.gallery, split.query, split.exclude_self
    else:
        raise ValueError(f"unknown val_split {which!r}; valid: val, test, none")
    row_of = {record.id: row for row, record in enumerate(gallery.records)}
    records = list(gallery.records)
    query_rows = []
    for record in query.records:
        if record.id not in row_of:
            row_of[record.id] = len(records)
            records.append(record)
        query_rows.append(row_of[record.id])
    images = ImageSet(records, "val")
    return ValidationSet(
        images,
        images.labels,
        np.asarray(query_rows, dtype=np.int64),
        np.arange(len(gallery), dtype=np.int64),
        exclude_self,
    )


def load_training_data(spec: DataSpec) -> tuple[ImageSet, ValidationSet | None]:
    """Load ``spec.source``, split it by ``spec.protocol`` and return the train and val sets."""
    split = make_split(load_source(spec.source), spec.protocol, **spec.protocol_args)
    if split.train is None or not len(split.train):
        raise ValueError(
            f"protocol {spec.protocol!r} left no training images in {spec.source}; use "
            "class_disjoint, or a source with a train split column"
        )
    return split.train, validation_set(split, spec.val_split)


def resize_preprocessing(preprocessing: Preprocessing, image_size: int | None) -> Preprocessing:
    """``preprocessing`` with ``input_size = image_size`` (unchanged when ``None``)."""
    return preprocessing if image_size is None else replace(preprocessing, input_size=image_size)


class RetrievalDataModule(L.LightningDataModule):
    """Train batches of ``train`` and the val images of ``val`` for Lightning.

    Args:
        train: Training records.
        val: The retrieval val set, or ``None``.
        spec: Batching, sampling and augmentation settings.
        preprocessing: The model's preprocessing (train and eval transforms follow it).
        seed: Base seed.
        with_labels: Give batches class labels (codes in first-seen order of ``classes``).
        with_text: Give batches captions.
        two_views: Give batches a second view of each image.
    """

    def __init__(
        self,
        train: ImageSet,
        val: ValidationSet | None,
        spec: DataSpec,
        preprocessing: Preprocessing,
        seed: int,
        with_labels: bool,
        with_text: bool = False,
        two_views: bool = False,
    ) -> None:
        super().__init__()
        if with_labels and not train.is_labelled:
            missing = sum(label is None for label in train.labels)
            raise ValueError(f"{missing} training images have no label; the loss needs labels")
        self.train_set = train
        self.val_set = val
        self.spec = spec
        self.preprocessing = preprocessing
        self.seed = seed
        self.classes = train.classes() if with_labels else []
        vocabulary = {name: code for code, name in enumerate(self.classes)}
        self.codes = label_codes(train.labels, vocabulary) if with_labels else None
        self.with_text = with_text
        self.two_views = two_views
        self.generator = torch.Generator().manual_seed(seed)

    @property
    def num_classes(self) -> int | None:
        return len(self.classes) or None

    def _position(self) -> tuple[int, int, int]:
        """``(epoch, rank, world_size)`` of the attached trainer (a resumed run starts late)."""
        trainer = self.trainer
        if trainer is None:
            return 0, 0, 1
        return trainer.current_epoch, trainer.global_rank, trainer.world_size

    def train_dataloader(self) -> DataLoader:
        spec = self.spec
        codes = self.codes if self.codes is not None else [0] * len(self.train_set)
        epoch, rank, world_size = self._position()
        sampler = EpochSampler(
            codes, spec.sampler, spec.batch_size, spec.m, self.seed, epoch, rank, world_size
        )
        dataset = TrainDataset(
            self.train_set,
            train_transform(self.preprocessing, spec.augment),
            self.codes,
            self.with_text,
            self.two_views,
            self.seed,
        )
        return DataLoader(
            dataset,
            batch_size=spec.batch_size,
            sampler=sampler,
            num_workers=spec.num_workers,
            collate_fn=collate_train,
            drop_last=len(sampler) >= spec.batch_size,
            generator=self.generator,
            persistent_workers=False,
        )

    def val_dataloader(self) -> DataLoader | list[DataLoader]:
        if self.val_set is None:
            return []
        _, rank, world_size = self._position()
        return DataLoader(
            ImageDataset(self.val_set.images, eval_transform(self.preprocessing)),
            batch_size=self.spec.val_batch_size or self.spec.batch_size,
            sampler=range(rank, len(self.val_set.images), world_size),
            num_workers=self.spec.num_workers,
            collate_fn=collate_skipping_broken,
        )
