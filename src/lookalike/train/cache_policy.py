"""When a run trains its head on cached features instead of images (``trainer.cache_features``).

The cache is used when it gives the same training as the image path ("auto"), always ("true": a
setting that makes it differ is refused, naming it), or never ("false"). It gives the same
training when: the strategy is ``frozen`` and nothing of the backbone trains
(``train_norm_layers`` off), ``data.augment`` is ``none`` and no second view, caption or
unlabelled stream is drawn, the pooling has no trainable parameter (GeM's ``p``), the run is one
process, and the frozen backbone gives the same features in training mode as in eval mode: no
dropout, drop connect or stochastic depth (EfficientNet's default drop connect of 0.2 makes
"auto" train on images; ``model.backbone_kwargs.drop_connect_rate=0`` or "true", which then
trains on the eval-mode features, caches).
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from lookalike.models.embedder import Embedder
from lookalike.train.config import CACHE_FEATURES, TrainConfig
from lookalike.train.data import RetrievalDataModule
from lookalike.train.frozen_features import stochastic_backbone

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


def _single_process(config: TrainConfig) -> bool:
    """The run trains in one process on one device."""
    spec = config.trainer
    if spec.num_nodes != 1 or spec.strategy not in ("auto", "single_device"):
        return False
    devices = spec.devices
    if isinstance(devices, list | tuple):
        return len(devices) == 1
    if devices in ("auto", None, -1, "-1"):
        return not _trains_on_cuda(config) or torch.cuda.device_count() <= 1
    return str(devices).strip() == "1"


def extraction_device(config: TrainConfig) -> str:
    """The device the trainer will use: the CPU, or the one CUDA device of the run."""
    spec = config.trainer
    if not _trains_on_cuda(config):
        return "cpu"
    devices = spec.devices
    if isinstance(devices, list | tuple) and devices:
        return f"cuda:{int(devices[0])}"
    return "cuda"


def _trains_on_cuda(config: TrainConfig) -> bool:
    """The trainer's accelerator is CUDA (named, or "auto" on a machine that has it)."""
    accelerator = config.trainer.accelerator
    return accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
