"""Which backbone parameters train, epoch by epoch: the fine-tuning strategies.

A strategy decides, for each epoch, which parameters of ``embedder.backbone`` require gradients;
the pooling (GeM's ``p``) and the head keep their own settings, trainable by default:

- ``"frozen"``: the backbone never trains (linear probing of the embedding head);
- ``"full"``: every backbone parameter trains;
- ``"last_n"``: only the last ``last_n`` blocks of ``backbone.blocks()`` train;
- ``"freeze_then_unfreeze"``: frozen for epochs ``< unfreeze_epoch``, then the last ``last_n``
  blocks (all of the backbone when ``last_n == 0``), the gradual unfreezing of Howard and Ruder,
  "Universal Language Model Fine-tuning for Text Classification", ACL 2018;
- ``"lora"``: low-rank adapters on the attention projections, base weights frozen (Hu et al.,
  "LoRA: Low-Rank Adaptation of Large Language Models", ICLR 2022; see
  :mod:`lookalike.models.lora`).

The training loop calls :func:`apply_finetune` at the start of every epoch and
:func:`set_frozen_eval` after every ``model.train()``;
:func:`~lookalike.models.lora.merge_lora` gives the plain model to save.
"""

from __future__ import annotations

import abc
import logging
from dataclasses import dataclass

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.instancenorm import _InstanceNorm

from lookalike.models import lora
from lookalike.models.backbones import Backbone
from lookalike.models.embedder import Embedder
from lookalike.registry import Registry

logger = logging.getLogger(__name__)

NORM_LAYERS: tuple[type[nn.Module], ...] = (
    _BatchNorm,
    _InstanceNorm,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.RMSNorm,
)
"""Normalisation layers that :attr:`FinetuneSpec.train_norm_layers` keeps trainable."""


@dataclass
class FinetuneSpec:
    """How to fine-tune the backbone.

    Attributes:
        strategy: A name of :data:`FINETUNE_STRATEGIES`.
        last_n: Trainable last blocks for ``"last_n"`` (>= 1) and for ``"freeze_then_unfreeze"``
            once unfrozen (0 = the whole backbone).
        unfreeze_epoch: ``"freeze_then_unfreeze"`` keeps the backbone frozen for epochs below it.
        lora_r: LoRA rank ``r``.
        lora_alpha: LoRA scale numerator: the update is ``(alpha / r) B A``.
        lora_dropout: Dropout on the LoRA branch input.
        lora_targets: Last path components of the ``nn.Linear`` layers to adapt; ``None`` for the
            family's attention projections (:data:`~lookalike.models.lora.DEFAULT_LORA_TARGETS`).
        lora_first_block: Adapt only blocks ``>= lora_first_block`` of ``backbone.blocks()``
            (the earlier blocks stay exactly pre-trained).
        train_norm_layers: Normalisation layers train even where their block is frozen (BatchNorm
            then also keeps updating its statistics); by default they freeze with their block.
        freeze_batchnorm: Every BatchNorm layer stays as loaded, statistics and affine weights,
            even in trainable blocks: small class-balanced batches then cannot shift them (as
            Proxy-Anchor, Kim et al. 2020, and most metric-learning code bases train CNNs).
    """

    strategy: str = "full"
    last_n: int = 2
    unfreeze_epoch: int = 1
    lora_r: int = lora.DEFAULT_LORA_R
    lora_alpha: int = lora.DEFAULT_LORA_ALPHA
    lora_dropout: float = lora.DEFAULT_LORA_DROPOUT
    lora_targets: list[str] | None = None
    lora_first_block: int = 0
    train_norm_layers: bool = False
    freeze_batchnorm: bool = False


class FinetuneStrategy(abc.ABC):
    """One entry of :data:`FINETUNE_STRATEGIES`: the backbone parameters trainable each epoch.

    Parameter names are relative to the backbone (``backbone.named_parameters()``).
    """

    def prepare(self, backbone: Backbone, spec: FinetuneSpec) -> None:
        """Change the backbone's structure once, before training (idempotent)."""

    @abc.abstractmethod
    def trainable(self, backbone: Backbone, spec: FinetuneSpec, epoch: int) -> set[str]:
        """Names of the backbone parameters that train during ``epoch``."""

    def ever_trainable(self, backbone: Backbone, spec: FinetuneSpec) -> set[str]:
        """Names of the backbone parameters that train in some epoch of the run."""
        return self.trainable(backbone, spec, 0)


FINETUNE_STRATEGIES = Registry[FinetuneStrategy]("finetune strategy")


@FINETUNE_STRATEGIES.register("frozen")
class Frozen(FinetuneStrategy):
    """The backbone never trains."""

    def trainable(self, backbone: Backbone, spec: FinetuneSpec, epoch: int) -> set[str]:
        return set()


@FINETUNE_STRATEGIES.register("full")
class Full(FinetuneStrategy):
    """Every backbone parameter trains."""

    def trainable(self, backbone: Backbone, spec: FinetuneSpec, epoch: int) -> set[str]:
        return {name for name, _ in backbone.named_parameters()}


@FINETUNE_STRATEGIES.register("last_n")
class LastN(FinetuneStrategy):
    """The parameters of the last ``spec.last_n`` blocks train."""

    def trainable(self, backbone: Backbone, spec: FinetuneSpec, epoch: int) -> set[str]:
        if spec.last_n < 1:
            raise ValueError(
                f"finetune last_n must be >= 1 for strategy 'last_n', got {spec.last_n}; "
                "use strategy 'frozen' or 'full'"
            )
        return last_block_parameters(backbone, spec.last_n)


@FINETUNE_STRATEGIES.register("freeze_then_unfreeze")
class FreezeThenUnfreeze(FinetuneStrategy):
    """Frozen before ``spec.unfreeze_epoch``, then the last ``spec.last_n`` blocks (0 = all)."""

    def trainable(self, backbone: Backbone, spec: FinetuneSpec, epoch: int) -> set[str]:
        if spec.unfreeze_epoch < 0 or spec.last_n < 0:
            raise ValueError(
                "finetune unfreeze_epoch and last_n must be >= 0, "
                f"got {spec.unfreeze_epoch} and {spec.last_n}"
            )
        if epoch < spec.unfreeze_epoch:
            return set()
        if spec.last_n == 0:
            return {name for name, _ in backbone.named_parameters()}
        return last_block_parameters(backbone, spec.last_n)

    def ever_trainable(self, backbone: Backbone, spec: FinetuneSpec) -> set[str]:
        return self.trainable(backbone, spec, max(spec.unfreeze_epoch, 0))


@FINETUNE_STRATEGIES.register("lora")
class LoRA(FinetuneStrategy):
    """LoRA adapters on the attention projections train; every base weight is frozen."""

    def prepare(self, backbone: Backbone, spec: FinetuneSpec) -> None:
        lora.add_lora(
            backbone,
            r=spec.lora_r,
            alpha=spec.lora_alpha,
            dropout=spec.lora_dropout,
            targets=spec.lora_targets,
            alternatives=[name for name in FINETUNE_STRATEGIES.names() if name != "lora"],
            first_block=spec.lora_first_block,
        )

    def trainable(self, backbone: Backbone, spec: FinetuneSpec, epoch: int) -> set[str]:
        names = {name for name, _ in backbone.named_parameters() if "lora_" in name}
        if not names:
            raise ValueError(
                f"{backbone.name} carries no LoRA adapters; call apply_finetune(embedder, spec) "
                "before building the optimiser"
            )
        return names


def last_block_parameters(backbone: Backbone, count: int) -> set[str]:
    """Names of the parameters of the last ``count`` blocks of ``backbone.blocks()``."""
    blocks = backbone.blocks()
    if count > len(blocks):
        logger.warning(
            "last_n=%d but %s has %d blocks; all blocks train", count, backbone.name, len(blocks)
        )
    prefixes = tuple(f"{name}." for name, _ in blocks[len(blocks) - min(count, len(blocks)) :])
    return {name for name, _ in backbone.named_parameters() if name.startswith(prefixes)}


def norm_layer_parameters(
    module: nn.Module, kinds: tuple[type[nn.Module], ...] = NORM_LAYERS
) -> set[str]:
    """Names of the parameters that belong to normalisation layers (``kinds``)."""
    return {
        f"{layer_name}.{name}" if layer_name else name
        for layer_name, layer in module.named_modules()
        if isinstance(layer, kinds)
        for name, _ in layer.named_parameters(recurse=False)
    }


def trainable_backbone_parameters(
    embedder: Embedder, spec: FinetuneSpec, epoch: int | None = None
) -> set[str]:
    """Names (relative to ``embedder.backbone``) of the parameters that train during ``epoch``,
    or in any epoch of the run when ``epoch`` is ``None`` (what the optimiser must hold)."""
    backbone = embedder.backbone
    strategy = FINETUNE_STRATEGIES.create(spec.strategy)
    if epoch is None:
        names = strategy.ever_trainable(backbone, spec)
    else:
        names = strategy.trainable(backbone, spec, epoch)
    if spec.train_norm_layers:
        names |= norm_layer_parameters(backbone)
    if spec.freeze_batchnorm:
        names -= norm_layer_parameters(backbone, (_BatchNorm,))
    return names


def apply_finetune(embedder: Embedder, spec: FinetuneSpec, epoch: int = 0) -> list[str]:
    """Set ``requires_grad`` on the backbone for ``spec`` at ``epoch``; call at every epoch start.

    Injects the LoRA adapters on the first call of a ``"lora"`` spec (later calls keep them).
    The pooling and head parameters are left as their modules set them (trainable by default).

    Args:
        embedder: The model being trained.
        spec: The fine-tuning strategy and its options.
        epoch: The epoch about to start, from 0.

    Returns:
        Names of the backbone blocks (from ``backbone.blocks()``) with trainable parameters now.
    """
    backbone = embedder.backbone
    FINETUNE_STRATEGIES.create(spec.strategy).prepare(backbone, spec)
    trainable = trainable_backbone_parameters(embedder, spec, epoch)
    for name, parameter in backbone.named_parameters():
        parameter.requires_grad_(name in trainable)
    blocks = [
        name
        for name, block in backbone.blocks()
        if any(parameter.requires_grad for parameter in block.parameters())
    ]
    total = sum(1 for _ in backbone.parameters())
    logger.info(
        "finetune %s, epoch %d: %d of %d backbone tensors train, in %d of %d blocks",
        spec.strategy,
        epoch,
        len(trainable),
        total,
        len(blocks),
        len(backbone.blocks()),
    )
    return blocks


def set_frozen_eval(embedder: Embedder) -> None:
    """Put frozen BatchNorm layers in eval mode, so their running statistics stay as loaded.

    A BatchNorm layer is frozen when none of its parameters requires gradients (one without
    affine parameters follows the nearest enclosing module that has parameters). Call after
    every ``model.train()``, which puts them back in training mode.
    """
    for name, module in embedder.named_modules():
        if isinstance(module, _BatchNorm) and not _trains(embedder, name, module):
            module.eval()


def _trains(root: nn.Module, name: str, module: nn.Module) -> bool:
    parameters = list(module.parameters())
    path = name.split(".")
    while not parameters and path:
        path.pop()
        parameters = list(root.get_submodule(".".join(path)).parameters())
    return any(parameter.requires_grad for parameter in parameters)
