"""Optimiser parameter groups, optimisers and learning-rate schedules.

Parameters are grouped by where they sit: each backbone block gets its own learning rate under
layer-wise decay (block ``i`` of ``n`` gets ``lr * layer_decay ** (n - 1 - i)``, as in Clark et
al., "ELECTRA", ICLR 2020 and Bao et al., "BEiT: BERT Pre-Training of Image Transformers",
ICLR 2022), the pooling and head get ``head_lr``, and parameters the loss owns (ArcFace centres,
proxies, CLIP's temperature) get ``loss_lr``. Biases, normalisation weights and other 1-D
parameters get no weight decay (Loshchilov and Hutter, "Decoupled Weight Decay Regularization",
ICLR 2019), so each of these groups splits in two.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from lookalike.models.embedder import Embedder
from lookalike.registry import Registry
from lookalike.train.finetune import FinetuneSpec, trainable_backbone_parameters

OPTIMIZERS = Registry[torch.optim.Optimizer]("optimizer")
SCHEDULES = Registry[float]("learning-rate schedule")


@dataclass
class OptimSpec:
    """Optimiser and schedule settings.

    Attributes:
        name: A name of :data:`OPTIMIZERS` (``"adamw"``, ``"sgd"``).
        lr: Base learning rate of the backbone (its last block under layer decay).
        head_lr: Learning rate of the pooling and head; ``None`` = ``lr``.
        loss_lr: Learning rate of the loss's own parameters; ``None`` = the head's.
        weight_decay: Weight decay of matrices and kernels (never of 1-D parameters).
        layer_decay: Layer-wise decay factor in ``(0, 1]``; 1.0 turns it off.
        momentum: SGD momentum.
        warmup_steps: Steps of linear warm-up from 0.
        schedule: A name of :data:`SCHEDULES` (``"cosine"``, ``"constant"``) after warm-up.
        min_lr_ratio: Final learning rate of the cosine schedule, as a fraction of each base.
        grad_clip: Gradient-norm clipping threshold applied by the training loop, or ``None``.
    """

    name: str = "adamw"
    lr: float = 1e-4
    head_lr: float | None = 1e-3
    loss_lr: float | None = 1e-2
    weight_decay: float = 1e-4
    layer_decay: float = 1.0
    momentum: float = 0.9
    warmup_steps: int = 0
    schedule: str = "cosine"
    min_lr_ratio: float = 0.0
    grad_clip: float | None = None


def _check_spec(spec: OptimSpec) -> None:
    rates = {"lr": spec.lr, "head_lr": spec.head_lr, "loss_lr": spec.loss_lr}
    for option, value in rates.items():
        if value is not None and not value > 0:
            raise ValueError(f"optimiser {option} must be > 0, got {value}")
    if not 0 < spec.layer_decay <= 1:
        raise ValueError(f"optimiser layer_decay must be in (0, 1], got {spec.layer_decay}")
    if spec.weight_decay < 0:
        raise ValueError(f"optimiser weight_decay must be >= 0, got {spec.weight_decay}")


def _sections(
    embedder: Embedder, spec: OptimSpec
) -> list[tuple[str, float, dict[str, nn.Parameter]]]:
    """Backbone sections in input-to-output order: ``(name, lr, {param name: param})``.

    Parameters outside the blocks go to ``"stem"`` (input side, like BEiT's embedding layer:
    ``lr * layer_decay ** n``) or ``"tail"`` (modules registered after the last block, such as a
    final norm: ``lr``).
    """
    backbone = embedder.backbone
    blocks = backbone.blocks()
    count = len(blocks)
    order = {name: index for index, (name, _) in enumerate(backbone.named_modules())}
    last_block = blocks[-1][0] if blocks else ""
    last_block_end = max(
        (index for name, index in order.items() if blocks and _under(name, last_block)),
        default=-1,
    )
    sections: dict[str, dict[str, nn.Parameter]] = {"stem": {}}
    sections.update({name: {} for name, _ in blocks})
    sections["tail"] = {}
    for name, parameter in backbone.named_parameters():
        block = next((b for b, _ in blocks if name.startswith(f"{b}.")), None)
        if block is None:
            owner = name.rpartition(".")[0]
            block = "tail" if blocks and order[owner] > last_block_end else "stem"
        sections[block][name] = parameter
    scales = {"stem": spec.layer_decay**count, "tail": 1.0}
    scales.update({name: spec.layer_decay ** (count - 1 - i) for i, (name, _) in enumerate(blocks)})
    return [(name, spec.lr * scales[name], members) for name, members in sections.items()]


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(f"{prefix}.")


def param_groups(
    embedder: Embedder, loss: nn.Module | None, spec: OptimSpec, finetune: FinetuneSpec
) -> list[dict]:
    """Optimiser parameter groups for ``embedder`` (after :func:`apply_finetune`) and ``loss``.

    Groups, each with ``name``, ``params``, ``lr`` and ``weight_decay``: ``backbone.stem``, one
    ``backbone.<block>`` per block of ``backbone.blocks()``, ``backbone.tail``, ``head`` (pooling
    and head) and ``loss``, each followed by its ``.no_decay`` twin holding its 1-D parameters
    (biases, norm weights, GeM ``p``, temperatures). Empty groups are left out.

    Backbone parameters the strategy trains in some epoch are included even while frozen
    (``freeze_then_unfreeze``: their gradients stay ``None`` until unfrozen, so optimisers skip
    them); those frozen for the whole run (``frozen``, blocks outside ``last_n``, LoRA's base
    weights) are not. Pooling, head and loss parameters are included when they require grad.
    """
    _check_spec(spec)
    ever_trainable = trainable_backbone_parameters(embedder, finetune, epoch=None)
    head_lr = spec.head_lr if spec.head_lr is not None else spec.lr
    loss_lr = spec.loss_lr if spec.loss_lr is not None else head_lr
    sections = [
        (f"backbone.{name}", lr, [p for n, p in members.items() if n in ever_trainable])
        for name, lr, members in _sections(embedder, spec)
    ]
    head_parameters = [*embedder.pooling.parameters(), *embedder.head.parameters()]
    sections.append(("head", head_lr, [p for p in head_parameters if p.requires_grad]))
    if loss is not None:
        sections.append(("loss", loss_lr, [p for p in loss.parameters() if p.requires_grad]))

    groups: list[dict] = []
    seen: set[int] = set()
    for name, lr, parameters in sections:
        unique = [p for p in parameters if id(p) not in seen]
        seen.update(id(p) for p in unique)
        decay = [p for p in unique if p.ndim > 1]
        no_decay = [p for p in unique if p.ndim <= 1]
        if decay:
            groups.append(
                {"name": name, "params": decay, "lr": lr, "weight_decay": spec.weight_decay}
            )
        if no_decay:
            groups.append(
                {"name": f"{name}.no_decay", "params": no_decay, "lr": lr, "weight_decay": 0.0}
            )
    if not groups:
        raise ValueError("nothing to optimise: no backbone, head, pooling or loss parameter trains")
    return groups


@OPTIMIZERS.register("adamw")
def adamw(groups: Iterable[dict], spec: OptimSpec) -> torch.optim.Optimizer:
    """AdamW (Loshchilov and Hutter, ICLR 2019) over the groups."""
    return torch.optim.AdamW(list(groups), lr=spec.lr, weight_decay=spec.weight_decay)


@OPTIMIZERS.register("sgd")
def sgd(groups: Iterable[dict], spec: OptimSpec) -> torch.optim.Optimizer:
    """SGD with momentum ``spec.momentum`` over the groups."""
    return torch.optim.SGD(
        list(groups), lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay
    )


def create_optimizer(
    embedder: Embedder, loss: nn.Module | None, spec: OptimSpec, finetune: FinetuneSpec
) -> torch.optim.Optimizer:
    """The optimiser ``spec.name`` over :func:`param_groups`."""
    factory = OPTIMIZERS.get(spec.name)
    return factory(param_groups(embedder, loss, spec, finetune), spec)


@SCHEDULES.register("cosine")
def cosine(progress: float, min_lr_ratio: float) -> float:
    """Cosine decay (Loshchilov and Hutter, "SGDR", ICLR 2017) from 1 to ``min_lr_ratio``
    as ``progress`` goes from 0 to 1."""
    return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


@SCHEDULES.register("constant")
def constant(progress: float, min_lr_ratio: float) -> float:
    """No decay after warm-up."""
    return 1.0


def lr_factor(step: int, spec: OptimSpec, total_steps: int) -> float:
    """Multiplier of every group's base learning rate at optimiser step ``step`` (from 0).

    ``step / warmup_steps`` during warm-up, then the schedule over the remaining steps, held at
    its final value past ``total_steps``.
    """
    if step < spec.warmup_steps:
        return step / spec.warmup_steps
    progress = (step - spec.warmup_steps) / max(1, total_steps - spec.warmup_steps)
    return SCHEDULES.get(spec.schedule)(min(progress, 1.0), spec.min_lr_ratio)


def create_scheduler(
    optimizer: torch.optim.Optimizer, spec: OptimSpec, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step schedule: linear warm-up from 0 over ``spec.warmup_steps``, then cosine decay to
    ``min_lr_ratio`` times each group's base learning rate at ``total_steps`` (or constant).

    Step it after every optimiser step.
    """
    SCHEDULES.get(spec.schedule)
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    if not 0 <= spec.warmup_steps <= total_steps:
        raise ValueError(
            f"warmup_steps must be in [0, total_steps={total_steps}], got {spec.warmup_steps}"
        )
    if not 0 <= spec.min_lr_ratio <= 1:
        raise ValueError(f"min_lr_ratio must be in [0, 1], got {spec.min_lr_ratio}")
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, spec, total_steps)
    )
