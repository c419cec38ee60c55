"""Training the head on cached backbone features: a frozen backbone runs once, not every epoch.

With ``finetune.strategy: frozen`` and no augmentation that needs pixels, every epoch would push
the same images through the same frozen backbone and pooling to the same ``(N, C)`` descriptors:
only the head and the loss learn. :func:`with_cached_features` embeds the train and val images
once with the frozen backbone + pooling (:func:`lookalike.embed.extract.embed_image_set`, eval
transform, full-size decoding, the run's precision), then trains on those descriptors:
:class:`CachedFeatureDataModule` serves them in the batches the image path would draw (the same
:class:`~lookalike.train.sampler.EpochSampler`, the same unreadable images left out), and
:class:`CachedFeatureModule` applies only the head and the normalisation before the loss.
The module still holds the whole embedder, so checkpoints and the exported model are the full
embedder (backbone + trained head), exactly as without the cache.

:mod:`lookalike.train.cache_policy` decides whether a run uses the cache
(``trainer.cache_features``); :mod:`lookalike.train.frozen_features` holds the frozen part itself.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from lookalike.data.dataset import collate_skipping_broken
from lookalike.data.records import ImageSet
from lookalike.embed.extract import embed_image_set
from lookalike.runs import FEATURE_CACHE_DIR
from lookalike.train.cache_policy import extraction_device, use_cached_features
from lookalike.train.config import TrainConfig
from lookalike.train.data import RetrievalDataModule
from lookalike.train.dataset import collate_train
from lookalike.train.distributed import gather_optional, gather_rows
from lookalike.train.frozen_features import PooledFeatures
from lookalike.train.module import RetrievalModule
from lookalike.train.sampler import EpochSampler, TrainKey

logger = logging.getLogger(__name__)

@dataclass
class CachedFeatures:
    """Pooled descriptors of an image set, row-aligned with it.

    Attributes:
        features: ``(N, C)`` float32; rows of unreadable images are zero.
        present: ``(N,)`` bool, False for images that could not be read.
        reasons: Why each unreadable row could not be read, by row.
    """

    features: Tensor
    present: Tensor
    reasons: dict[int, str]


def embed_features(
    stem: PooledFeatures,
    images: ImageSet,
    config: TrainConfig,
    device: str,
    folder: Path | None = None,
) -> CachedFeatures:
    """``images`` through ``stem`` once, as the image path's eval transform sees them.

    With ``folder`` the features are an embedding folder there, written in shards as they are
    computed: a killed run started again reuses the finished shards (or the whole folder) of
    the same frozen backbone instead of embedding again.
    """
    data = config.data
    result = embed_image_set(
        stem,
        images,
        output_dir=folder,
        batch_size=data.val_batch_size or data.batch_size,
        num_workers="auto",
        device=device,
        amp=str(config.trainer.precision) != "32",
        channels_last=False,
        draft_decode=False,  # the image path decodes in full; the cache must match it
    )
    row_of = {image_id: row for row, image_id in enumerate(images.ids)}
    features = torch.zeros(len(images), stem.embedding_dim, dtype=torch.float32)
    present = torch.zeros(len(images), dtype=torch.bool)
    rows = torch.as_tensor([row_of[image_id] for image_id in result.ids], dtype=torch.int64)
    features[rows] = torch.from_numpy(result.embeddings)
    present[rows] = True
    reasons = {row_of[entry["id"]]: entry["reason"] for entry in result.info["skipped"]}
    return CachedFeatures(features, present, reasons)


class _TrainFeatures(Dataset[dict[str, Any] | None]):
    """Train items as :class:`~lookalike.train.dataset.TrainDataset` gives them, with the
    cached descriptor ``(C,)`` as ``image``; ``None`` for an unreadable image."""

    def __init__(self, cached: CachedFeatures, labels: list[int] | None) -> None:
        self.cached = cached
        self.labels = labels

    def __len__(self) -> int:
        return len(self.cached.present)

    def __getitem__(self, key: TrainKey | int) -> dict[str, Any] | None:
        index = key[1] if isinstance(key, tuple) else key
        if not self.cached.present[index]:
            return None
        item: dict[str, Any] = {"image": self.cached.features[index], "index": index}
        if self.labels is not None:
            item["label"] = self.labels[index]
        return item


class _ValFeatures(Dataset[tuple[Any, ...]]):
    """Val items as :class:`~lookalike.data.dataset.ImageDataset` gives them, with the cached
    descriptor in place of the image."""

    def __init__(self, cached: CachedFeatures) -> None:
        self.cached = cached

    def __len__(self) -> int:
        return len(self.cached.present)

    def __getitem__(self, index: int) -> tuple[Any, ...]:
        if not self.cached.present[index]:
            return (None, index, self.cached.reasons.get(index, "unreadable"))
        return (self.cached.features[index], index)


class CachedFeatureDataModule(RetrievalDataModule):
    """:class:`RetrievalDataModule` whose batches hold cached descriptors ``(B, C)`` as
    ``images``, drawn by the same sampler, in the same order, as the image batches."""

    train_features: CachedFeatures
    val_features: CachedFeatures | None

    def train_dataloader(self) -> DataLoader:  # type: ignore[override]
        spec = self.spec
        codes = self.codes if self.codes is not None else [0] * len(self.train_set)
        epoch, rank, world_size = self._position()
        sampler = EpochSampler(
            codes, spec.sampler, spec.batch_size, spec.m, self.seed, epoch, rank, world_size
        )
        return DataLoader(
            _TrainFeatures(self.train_features, self.codes),
            batch_size=spec.batch_size,
            sampler=sampler,
            collate_fn=collate_train,
            drop_last=len(sampler) >= spec.batch_size,
            generator=self.generator,  # as the image loader: no draw from the global generator
        )

    def val_dataloader(self) -> DataLoader | list[DataLoader]:
        if self.val_set is None or self.val_features is None:
            return []
        _, rank, world_size = self._position()
        return DataLoader(
            _ValFeatures(self.val_features),
            batch_size=self.spec.val_batch_size or self.spec.batch_size,
            sampler=range(rank, len(self.val_set.images), world_size),
            collate_fn=collate_skipping_broken,
        )


class CachedFeatureModule(RetrievalModule):
    """:class:`RetrievalModule` whose batches hold pooled descriptors ``(B, C)``: each step
    applies the head (and the L2 normalisation) of the embedder, the rest as the image path."""

    def embed_features(self, features: Tensor) -> Tensor:
        """``(B, C)`` pooled descriptors -> ``(B, D)`` embeddings, as ``Embedder.forward``
        finishes an image's embedding."""
        embeddings = self.embedder.head(features)
        return F.normalize(embeddings, dim=-1) if self.embedder.normalize else embeddings

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor | None:
        features = batch["images"]
        if features is None:
            logger.warning("training batch %d has no readable image; skipped", batch_idx)
            return None
        embeddings = gather_rows(self.embed_features(features))
        parts = self.loss(
            embeddings, gather_optional(batch.get("labels")), step=self.global_step
        )
        self.log_parts(parts, int(embeddings.shape[0]))
        return parts["loss"]

    def validation_step(self, batch: tuple[Any, Tensor, list], batch_idx: int) -> None:
        features, indices, _ = batch
        if features is None:
            return
        self._val_rows.append(indices.cpu())
        self._val_embeddings.append(self.embed_features(features).float().cpu())


def with_cached_features(
    config: TrainConfig, module: RetrievalModule, datamodule: RetrievalDataModule
) -> tuple[RetrievalModule, RetrievalDataModule]:
    """``module`` and ``datamodule``, or, when :func:`use_cached_features` says so, their
    cached-feature versions with the train and val images embedded once."""
    embedder = module.embedder
    if not use_cached_features(config, embedder, datamodule):
        return module, datamodule
    device = extraction_device(config)
    stem = PooledFeatures(embedder)
    logger.info("frozen backbone: embedding the training images once on %s", device)
    cached_data = CachedFeatureDataModule(
        datamodule.train_set,
        datamodule.val_set,
        datamodule.spec,
        datamodule.preprocessing,
        datamodule.seed,
        with_labels=datamodule.codes is not None,
    )
    cache = Path(config.output) / FEATURE_CACHE_DIR
    cached_data.train_features = embed_features(
        stem, datamodule.train_set, config, device, cache / "train"
    )
    cached_data.val_features = (
        None
        if datamodule.val_set is None
        else embed_features(stem, datamodule.val_set.images, config, device, cache / "val")
    )
    cached_module = CachedFeatureModule(
        embedder,
        module.loss,
        module.finetune,
        module.optim,
        module.val_set,
        module.seed,
        metric=module.metric,
        classes=module.classes,
    )
    return cached_module, cached_data
