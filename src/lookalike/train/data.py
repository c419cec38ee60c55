"""Training and validation data for Lightning: the split, and the data module that batches it.

Every random draw of the input pipeline is a function of ``(seed, epoch, image index)``
(:mod:`lookalike.train.seeding`): the :class:`~lookalike.train.sampler.EpochSampler` orders each
epoch and the :class:`~lookalike.train.dataset.TrainDataset` augments each image
(:mod:`lookalike.train.augment`) under seeds derived from them.
"""

from __future__ import annotations

from dataclasses import replace

import lightning as L
import torch
from torch.utils.data import DataLoader

from lookalike.data.dataset import ImageDataset, collate_skipping_broken
from lookalike.data.protocols import make_split
from lookalike.data.records import ImageSet, label_codes
from lookalike.data.sources import load_source
from lookalike.models.preprocessing import Preprocessing, eval_transform
from lookalike.train.augment import train_transform
from lookalike.train.config import DataSpec
from lookalike.train.dataset import TrainDataset, collate_train
from lookalike.train.sampler import EpochSampler
from lookalike.train.validation import ValidationSet, validation_set


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
