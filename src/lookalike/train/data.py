"""Training and validation data for Lightning: the split, and the data module that batches it.

Every random draw of the input pipeline is a function of ``(seed, epoch, image index)``
(:mod:`lookalike.train.seeding`): the :class:`~lookalike.train.sampler.EpochSampler` orders each
epoch and the :class:`~lookalike.train.dataset.TrainDataset` augments each image
(:mod:`lookalike.train.augment`) under seeds derived from them.

With unlabelled images (semi-supervised training) every step draws a labelled and an unlabelled
batch together through Lightning's ``CombinedLoader`` (``{"labelled": ..., "unlabelled": ...}``),
each image with a weak view (``data.augment``) and a strong one (``data.view_augment``); the
unlabelled stream (:mod:`lookalike.train.unlabelled`) has as many batches as the labelled one.
"""

from __future__ import annotations

from dataclasses import replace

import lightning as L
import torch
from lightning.pytorch.utilities import CombinedLoader
from torch.utils.data import DataLoader, Sampler
from torchvision.transforms import v2

from lookalike.data.dataset import ImageDataset, collate_skipping_broken
from lookalike.data.protocols import make_split
from lookalike.data.records import ImageSet, label_codes
from lookalike.models.preprocessing import Preprocessing, eval_transform
from lookalike.train.augment import train_transform
from lookalike.train.config import DataSpec
from lookalike.train.dataset import TrainDataset, collate_train
from lookalike.train.sampler import EpochSampler
from lookalike.train.seeding import mix_seed
from lookalike.train.unlabelled import UnlabelledSampler, load_images, unlabelled_images
from lookalike.train.validation import ValidationSet, validation_set
from lookalike.utils.cores import AUTO, available_cores, parse_workers, plan_cores

UNLABELLED_SEED_STREAM = 1
"""Mixed into the seed of the unlabelled stream, so its draws differ from the labelled one's."""
DEFAULT_STRONG_AUGMENT = "rand_augment"
"""The strong view of consistency pairs when ``data.view_augment`` is not set."""


def load_training_sets(spec: DataSpec) -> tuple[ImageSet, ValidationSet | None, ImageSet | None]:
    """Load ``spec.source`` (``"images:PATH"`` for unlabelled images), split it by
    ``spec.protocol`` and return the train, val and unlabelled sets (the last ``None`` without
    ``spec.unlabelled.sources``)."""
    split = make_split(load_images(spec.source), spec.protocol, **spec.protocol_args)
    if split.train is None or not len(split.train):
        raise ValueError(
            f"protocol {spec.protocol!r} left no training images in {spec.source}; use "
            "class_disjoint, train_only, or a source with a train split column"
        )
    sources = list(spec.unlabelled.sources)
    unlabelled = unlabelled_images(sources, split) if sources else None
    return split.train, validation_set(split, spec.val_split), unlabelled


def load_training_data(spec: DataSpec) -> tuple[ImageSet, ValidationSet | None]:
    """Load ``spec.source``, split it by ``spec.protocol`` and return the train and val sets."""
    train, val, _ = load_training_sets(spec)
    return train, val


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
        unlabelled: Unlabelled images drawn beside every labelled batch (``spec.unlabelled.ratio``
            times as many), or ``None``; with them every image of both streams has a weak and a
            strong view.
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
        unlabelled: ImageSet | None = None,
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
        self.unlabelled = unlabelled
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

    def _workers(self) -> int:
        """``data.num_workers``; "auto" plans this process's share of the machine's cores
        (over the processes of the attached trainer on this machine) on its device."""
        requested = parse_workers(self.spec.num_workers, "data.num_workers")
        if requested != AUTO:
            return int(requested)
        trainer = self.trainer
        if trainer is None:
            return plan_cores(AUTO, "cpu").workers
        local_processes = max(1, int(trainer.num_devices))
        cores = max(1, available_cores() // local_processes)
        return plan_cores(AUTO, trainer.strategy.root_device, cores).workers

    @property
    def view_pairs(self) -> bool:
        """Batches carry weak/strong view pairs (there is an unlabelled stream)."""
        return self.unlabelled is not None

    def _view_transform(self) -> v2.Compose:
        spec = self.spec
        if spec.view_augment is None and not self.view_pairs:
            return train_transform(self.preprocessing, spec.augment, spec.augment_options)
        name = spec.view_augment or DEFAULT_STRONG_AUGMENT
        return train_transform(self.preprocessing, name, spec.view_augment_options)

    def train_dataloader(self) -> DataLoader | CombinedLoader:
        spec = self.spec
        codes = self.codes if self.codes is not None else [0] * len(self.train_set)
        epoch, rank, world_size = self._position()
        sampler = EpochSampler(
            codes, spec.sampler, spec.batch_size, spec.m, self.seed, epoch, rank, world_size
        )
        weak = train_transform(self.preprocessing, spec.augment, spec.augment_options)
        strong = self._view_transform()
        dataset = TrainDataset(
            self.train_set,
            weak,
            self.codes,
            self.with_text,
            self.two_views or self.view_pairs,
            self.seed,
            view_transform=strong,
        )
        labelled = self._loader(dataset, sampler, spec.batch_size, len(sampler) >= spec.batch_size)
        if self.unlabelled is None:
            return labelled
        batch_size = max(1, round(spec.unlabelled.ratio * spec.batch_size))
        unlabelled_sampler = UnlabelledSampler(
            len(self.unlabelled), batch_size, len(labelled),
            mix_seed(self.seed, UNLABELLED_SEED_STREAM), epoch, rank, world_size,
        )
        unlabelled_set = TrainDataset(
            self.unlabelled, weak, None, two_views=True,
            seed=mix_seed(self.seed, UNLABELLED_SEED_STREAM), view_transform=strong,
        )
        streams = {
            "labelled": labelled,
            "unlabelled": self._loader(unlabelled_set, unlabelled_sampler, batch_size, False),
        }
        return CombinedLoader(streams, mode="min_size")

    def _loader(
        self, dataset: TrainDataset, sampler: Sampler, batch_size: int, drop_last: bool
    ) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            num_workers=self._workers(),
            collate_fn=collate_train,
            drop_last=drop_last,
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
            num_workers=self._workers(),
            collate_fn=collate_skipping_broken,
        )
