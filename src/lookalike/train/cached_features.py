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

The cache is used (``trainer.cache_features``) when it gives the same training as the image path
("auto"), always ("true": a setting that makes it differ is refused, naming it), or never
("false"). It gives the same training when: the strategy is ``frozen`` and nothing of the
backbone trains (``train_norm_layers`` off), ``data.augment`` is ``none`` and no second view,
caption or unlabelled stream is drawn, the pooling has no trainable parameter (GeM's ``p``), the
run is one process, and the frozen backbone gives the same features in training mode as in eval
mode: no dropout, drop connect or stochastic depth (EfficientNet's default drop connect of 0.2
makes "auto" train on images; ``model.backbone_kwargs.drop_connect_rate=0`` or "true", which then
trains on the eval-mode features, caches).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from lookalike.data.dataset import collate_skipping_broken
from lookalike.data.records import ImageSet
from lookalike.embed.extract import embed_image_set
from lookalike.models.embedder import Embedder
from lookalike.models.preprocessing import Preprocessing
from lookalike.train.config import CACHE_FEATURES, TrainConfig
from lookalike.train.data import RetrievalDataModule
from lookalike.train.dataset import collate_train
from lookalike.train.distributed import gather_optional, gather_rows
from lookalike.train.finetune import set_frozen_eval
from lookalike.train.module import RetrievalModule
from lookalike.train.sampler import EpochSampler, TrainKey

logger = logging.getLogger(__name__)

def cache_setting(value: Any) -> str:
    """``trainer.cache_features`` as one of :data:`~lookalike.train.config.CACHE_FEATURES`
    (YAML booleans accepted).

    Raises:
        ValueError: Any other value, named.
    """
    text = str(value).strip().lower()
    if text not in CACHE_FEATURES:
        raise ValueError(
            f"unknown trainer.cache_features {value!r}; valid: {', '.join(CACHE_FEATURES)}"
        )
    return text


def cache_blockers(
    config: TrainConfig, embedder: Embedder, datamodule: RetrievalDataModule
) -> list[str]:
    """Settings under which training on cached features could not train the same model as
    training on images (empty: none). Call after the fine-tuning strategy was applied
    (``requires_grad`` set). A backbone that is random in training mode is checked apart
    (:func:`stochastic_backbone`): ``trainer.cache_features=true`` accepts it."""
    blockers = []
    if config.finetune.strategy != "frozen":
        blockers.append(f"finetune.strategy is {config.finetune.strategy!r}, not 'frozen'")
    if any(parameter.requires_grad for parameter in embedder.backbone.parameters()):
        blockers.append("backbone parameters train (finetune.train_norm_layers?)")
    if config.data.augment != "none":
        blockers.append(f"data.augment is {config.data.augment!r}: pixels change every epoch")
    if datamodule.two_views or datamodule.view_pairs:
        blockers.append("batches carry second views of the images")
    if datamodule.with_text:
        blockers.append("batches carry captions")
    if any(parameter.requires_grad for parameter in embedder.pooling.parameters()):
        blockers.append("the pooling has trainable parameters (GeM's p)")
    if not _single_process(config):
        blockers.append("the run uses several processes")
    return blockers


def stochastic_backbone(embedder: Embedder) -> str | None:
    """Why the frozen backbone + pooling gives other outputs in training mode (as the image path
    runs it: ``train()`` then frozen BatchNorm in eval) than in eval mode, or ``None`` when it
    gives the same. Dropout and stochastic-depth layers are named; anything else (EfficientNet's
    functional drop connect) is found by running two random images both ways. Global random
    state is left as it was."""
    layers = _stochastic_layers(embedder.backbone)
    if layers:
        return f"the backbone drops activations in training mode ({layers[0]})"
    stem = PooledFeatures(embedder)
    size = embedder.preprocessing.input_size
    parameter = next(embedder.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    probe = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0)).to(device)
    was_training = embedder.training
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            embedder.train()
            set_frozen_eval(embedder)
            in_training = stem(probe)
            embedder.eval()
            in_eval = stem(probe)
    finally:
        embedder.train(was_training)
    scale = torch.maximum(in_training.abs().max(), in_eval.abs().max())
    if (in_training - in_eval).abs().max() <= 1e-4 * scale:  # relative: random weights are tiny
        return None
    return "the backbone is random in training mode (dropout, drop connect or stochastic depth)"


def use_cached_features(
    config: TrainConfig, embedder: Embedder, datamodule: RetrievalDataModule
) -> bool:
    """Whether ``trainer.cache_features`` asks for the cache and it may be used.

    Raises:
        ValueError: ``trainer.cache_features`` is "true" but a setting makes the cached
            training differ from the image path (the first such setting is named).
    """
    setting = cache_setting(config.trainer.cache_features)
    if setting == "false":
        return False
    blockers = cache_blockers(config, embedder, datamodule)
    if setting == "true" and blockers:
        raise ValueError(
            f"trainer.cache_features=true but {blockers[0]}; training on cached features "
            "needs a frozen backbone and no pixel augmentation (use trainer.cache_features=auto)"
        )
    if blockers:
        logger.info("training on images, not cached features: %s", "; ".join(blockers))
        return False
    randomness = stochastic_backbone(embedder)
    if randomness is None:
        return True
    if setting == "true":
        # asked for: the cache holds the eval-mode features, without that randomness
        logger.warning("trainer.cache_features=true: %s; the cached features leave it out",
                       randomness)
        return True
    logger.info(
        "training on images, not cached features: %s (set its rate to 0, e.g. "
        "model.backbone_kwargs.drop_connect_rate=0, or trainer.cache_features=true to train on "
        "its eval-mode features)", randomness,
    )
    return False


class PooledFeatures(nn.Module):
    """The frozen part of an embedder: images ``(B, 3, S, S)`` -> pooled descriptors ``(B, C)``.

    Shares the backbone and pooling modules of ``embedder`` (no copy); has what
    :func:`~lookalike.embed.extract.embed_image_set` needs of an embedder.
    """

    normalize = False

    def __init__(self, embedder: Embedder) -> None:
        super().__init__()
        self.backbone = embedder.backbone
        self.pooling = embedder.pooling
        self.embedding_dim = int(embedder.backbone.feature_dim)
        self.preprocessing: Preprocessing = embedder.preprocessing
        self.config = {**embedder.config, "part": "backbone+pooling"}
        self._fingerprint = f"{embedder.fingerprint()}:pooled"

    def fingerprint(self) -> str:
        return self._fingerprint

    def forward(self, images: Tensor) -> Tensor:
        return self.pooling(self.backbone(images))


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
    stem: PooledFeatures, images: ImageSet, config: TrainConfig, device: str
) -> CachedFeatures:
    """``images`` through ``stem`` once, as the image path's eval transform sees them."""
    data = config.data
    result = embed_image_set(
        stem,
        images,
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
        _, index = key if isinstance(key, tuple) else (0, key)
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
    device = _extraction_device(config)
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
    cached_data.train_features = embed_features(stem, datamodule.train_set, config, device)
    cached_data.val_features = (
        None
        if datamodule.val_set is None
        else embed_features(stem, datamodule.val_set.images, config, device)
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


def _stochastic_layers(backbone: nn.Module) -> list[str]:
    """Names of dropout and stochastic-depth layers that drop something in training mode."""
    found = []
    for name, layer in backbone.named_modules():
        rate = getattr(layer, "p", None) if isinstance(layer, nn.modules.dropout._DropoutNd) else (
            getattr(layer, "drop_prob", None)  # timm's DropPath / DropBlock
        )
        if isinstance(rate, float | int) and not isinstance(rate, bool) and rate > 0:
            found.append(name)
    return found


def _single_process(config: TrainConfig) -> bool:
    """The run trains in one process on one device."""
    spec = config.trainer
    if spec.num_nodes != 1 or spec.strategy not in ("auto", "single_device"):
        return False
    devices = spec.devices
    if isinstance(devices, list | tuple):
        return len(devices) == 1
    if devices in ("auto", None, -1, "-1"):
        on_cuda = spec.accelerator in ("gpu", "cuda") or (
            spec.accelerator == "auto" and torch.cuda.is_available()
        )
        return not on_cuda or torch.cuda.device_count() <= 1
    return str(devices).strip() == "1"


def _extraction_device(config: TrainConfig) -> str:
    """The device the trainer will use: the CPU, or the one CUDA device of the run."""
    spec = config.trainer
    on_cuda = spec.accelerator in ("gpu", "cuda") or (
        spec.accelerator == "auto" and torch.cuda.is_available()
    )
    if not on_cuda:
        return "cpu"
    devices = spec.devices
    if isinstance(devices, list | tuple) and devices:
        return f"cuda:{int(devices[0])}"
    return "cuda"

