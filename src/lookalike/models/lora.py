"""LoRA plumbing for vision transformers: which layers to adapt, injecting peft, merging back.

It lives with the models because a LoRA training checkpoint is rebuilt from it (adapters
re-injected, trained tensors loaded, adapters merged; see
:mod:`lookalike.models.training_checkpoint`); the ``"lora"`` fine-tuning strategy of
:mod:`lookalike.train.finetune` trains the adapters.

LoRA (Hu et al., "LoRA: Low-Rank Adaptation of Large Language Models", ICLR 2022) freezes a
weight ``W`` (``(out, in)``) and learns ``W + (alpha / r) B A`` with ``A`` ``(r, in)`` and ``B``
``(out, r)``, ``B`` initialised to zero so the adapted model starts equal to the base model. The
adapters are peft's ``LoraLayer`` modules, injected in place with
:func:`peft.inject_adapter_in_model` into the ``nn.Linear`` attention projections of the backbone
blocks:

- timm ViTs: the fused ``qkv`` projection (``q_proj``/``k_proj``/``v_proj`` where a model splits
  it);
- transformers ViT, DINOv2 and CLIP vision towers: ``q_proj``, ``k_proj``, ``v_proj`` (older
  transformers releases name them ``query``, ``key``, ``value``);
- open_clip ViTs: their blocks use ``torch.nn.MultiheadAttention``, whose input projection is a
  bare ``in_proj_weight`` parameter that peft can only adapt by re-merging weights around every
  forward pass (a rounding drift on the frozen weights, and LoRA forced onto ``out_proj`` too).
  Each one is therefore replaced by
  :class:`~lookalike.models.split_attention.SplitProjectionAttention`, the same attention with
  separate ``nn.Linear`` projections (identical outputs), and converted back when merging.
"""

from __future__ import annotations

import copy
import logging
import re
from collections.abc import Sequence

from torch import nn

from lookalike.models.backbones import Backbone
from lookalike.models.embedder import Embedder
from lookalike.models.split_attention import (
    in_scope,
    restore_multihead_attention,
    split_multihead_attention,
)

logger = logging.getLogger(__name__)

DEFAULT_LORA_R = 8
"""LoRA rank ``r`` when none is given."""
DEFAULT_LORA_ALPHA = 16
"""LoRA scale numerator (the update is ``(alpha / r) B A``) when none is given."""
DEFAULT_LORA_DROPOUT = 0.0
"""Dropout on the LoRA branch input when none is given."""

DEFAULT_LORA_TARGETS: dict[str, tuple[str, ...]] = {
    "timm": ("qkv", "q_proj", "k_proj", "v_proj"),
    "hf": ("q_proj", "k_proj", "v_proj", "query", "key", "value"),
    "open_clip": ("q_proj", "k_proj", "v_proj"),
}
"""Names (last component of the module path) of the projections LoRA adapts by default, per
backbone prefix; other prefixes try all of them."""


def default_lora_targets(backbone: Backbone) -> tuple[str, ...]:
    """The attention projections LoRA adapts by default for this backbone's family."""
    prefix = backbone.name.partition(":")[0].lower()
    if prefix in DEFAULT_LORA_TARGETS:
        return DEFAULT_LORA_TARGETS[prefix]
    return tuple(dict.fromkeys(n for names in DEFAULT_LORA_TARGETS.values() for n in names))


def lora_target_modules(
    backbone: Backbone, targets: Sequence[str], first_block: int = 0
) -> list[str]:
    """Paths (relative to ``backbone``) of the ``nn.Linear`` layers inside ``backbone.blocks()``
    (from block ``first_block`` on) whose last path component is one of ``targets``."""
    blocks = [f"{name}." for name, _ in backbone.blocks()[first_block:]]
    wanted = set(targets)
    return [
        name
        for name, module in backbone.named_modules()
        if isinstance(module, nn.Linear)
        and name.rsplit(".", 1)[-1] in wanted
        and in_scope(name, blocks)
    ]


def linear_layer_names(backbone: Backbone) -> list[str]:
    """Distinct last path components of the ``nn.Linear`` layers in the blocks (for errors)."""
    blocks = [f"{name}." for name, _ in backbone.blocks()]
    return sorted(
        {
            name.rsplit(".", 1)[-1]
            for name, module in backbone.named_modules()
            if isinstance(module, nn.Linear) and in_scope(name, blocks)
        }
    )


def inject_lora(
    backbone: Backbone, modules: Sequence[str], r: int, alpha: float, dropout: float
) -> None:
    """Wrap the named ``nn.Linear`` layers of ``backbone`` in peft LoRA layers, in place.

    Only the ``lora_A``/``lora_B`` weights require gradients afterwards.
    """
    from peft import LoraConfig, inject_adapter_in_model

    pattern = "|".join(re.escape(name) for name in modules)
    config = LoraConfig(
        r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=f"^(?:{pattern})$", bias="none"
    )
    inject_adapter_in_model(config, backbone)


def add_lora(
    backbone: Backbone,
    r: int = DEFAULT_LORA_R,
    alpha: float = DEFAULT_LORA_ALPHA,
    dropout: float = DEFAULT_LORA_DROPOUT,
    targets: Sequence[str] | None = None,
    alternatives: Sequence[str] = (),
    first_block: int = 0,
) -> None:
    """Put LoRA adapters of rank ``r`` on the ``nn.Linear`` layers named ``targets`` (last path
    component) in the blocks of ``backbone``, in place; a backbone already adapted at rank ``r``
    is left as it is.

    With ``first_block = N`` only blocks ``N, N+1, ...`` of ``backbone.blocks()`` are adapted and
    the earlier ones keep their pre-trained features exactly (the distractor-competition work
    adapted blocks 16+ of a 32-block ViT).

    open_clip attention is split into separate projections first
    (:func:`split_multihead_attention`).

    Args:
        backbone: The backbone to adapt.
        r: LoRA rank (>= 1).
        alpha: Scale numerator: the update is ``(alpha / r) B A``.
        dropout: Dropout on the LoRA branch input, in ``[0, 1)``.
        targets: Last path components of the layers to adapt; ``None`` for the family's attention
            projections (:data:`DEFAULT_LORA_TARGETS`).
        alternatives: Fine-tuning strategies the error names when no layer fits.
        first_block: Index (in ``backbone.blocks()``) of the first block to adapt.

    Raises:
        ValueError: Adapters of another rank are present, the options are out of range, or no
            layer of the blocks is named in ``targets``.
    """
    rank = lora_rank(backbone)
    if rank is not None:
        if rank != r:
            raise ValueError(
                f"{backbone.name} already carries LoRA adapters of rank {rank}, not lora_r={r}"
            )
        return
    if r < 1 or not 0.0 <= dropout < 1.0:
        raise ValueError(
            f"finetune lora_r must be >= 1 and lora_dropout in [0, 1), got {r} and {dropout}"
        )
    count = len(backbone.blocks())
    if not 0 <= first_block < count:
        raise ValueError(
            f"finetune lora_first_block must lie in [0, {count}) for {backbone.name} "
            f"({count} blocks), got {first_block}"
        )
    blocks = [f"{name}." for name, _ in backbone.blocks()[first_block:]]
    split = split_multihead_attention(backbone, blocks)
    targets = targets or default_lora_targets(backbone)
    modules = lora_target_modules(backbone, targets, first_block)
    if not modules:
        linear = linear_layer_names(backbone)
        if split:
            restore_multihead_attention(backbone)
        raise ValueError(
            f"finetune 'lora' found no nn.Linear layers named {', '.join(targets)} in the "
            f"blocks of {backbone.name} (its linear layers: {', '.join(linear) or 'none'}); "
            f"LoRA adapts attention projections of transformers, for this backbone use one "
            f"of {', '.join(alternatives)}, or set lora_targets"
        )
    inject_lora(backbone, modules, r, alpha, dropout)
    logger.info("LoRA r=%d on %d layers of %s", r, len(modules), backbone.name)


def lora_rank(module: nn.Module) -> int | None:
    """Rank ``r`` of the injected LoRA layers, ``None`` when there are none."""
    from peft.tuners.lora import LoraLayer

    for child in module.modules():
        if isinstance(child, LoraLayer):
            return int(next(iter(child.r.values())))
    return None


def merge_and_unload(module: nn.Module) -> None:
    """Fold every LoRA layer into its base layer (``W += (alpha / r) B A``) and put the base
    layer back in its place, in place; open_clip attention returns to ``nn.MultiheadAttention``."""
    from peft.tuners.lora import LoraLayer

    wrapped = [
        (name, child) for name, child in module.named_modules() if isinstance(child, LoraLayer)
    ]
    for name, layer in wrapped:
        layer.merge()
        module.set_submodule(name, layer.get_base_layer())
    if hasattr(module, "peft_config"):
        del module.peft_config
    restore_multihead_attention(module)


def merge_lora(embedder: Embedder) -> Embedder:
    """A copy of ``embedder`` with its LoRA adapters folded into the base weights.

    The copy has the modules and state-dict keys of a plain :func:`create_embedder` model (so
    :func:`~lookalike.models.checkpoint.save_embedder` / ``load_embedder`` round-trip it) and
    every backbone parameter trainable; ``embedder`` itself is unchanged. An embedder without
    adapters is copied as it is.
    """
    merged = copy.deepcopy(embedder)
    merge_and_unload(merged.backbone)
    merged.backbone.requires_grad_(True)
    return merged
