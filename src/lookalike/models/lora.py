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
  Each one is therefore replaced by :class:`SplitProjectionAttention`, the same attention with
  separate ``nn.Linear`` projections (identical outputs), and converted back when merging.
"""

from __future__ import annotations

import copy
import logging
import re
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lookalike.models.backbones import Backbone
from lookalike.models.embedder import Embedder

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


class SplitProjectionAttention(nn.Module):
    """``nn.MultiheadAttention`` (Vaswani et al., "Attention Is All You Need", NeurIPS 2017) with
    its query, key, value and output projections as separate ``nn.Linear`` layers.

    Same call signature and outputs as ``nn.MultiheadAttention``, so LoRA can target
    ``q_proj``/``k_proj``/``v_proj`` as ordinary linear layers. Build it with
    :meth:`from_multihead_attention` and convert back with :meth:`to_multihead_attention`.

    Args:
        embed_dim: Width ``E`` of queries and outputs.
        num_heads: Number of heads ``H`` (``E`` divisible by ``H``).
        kdim: Width of keys.
        vdim: Width of values.
        bias: Projections carry biases.
        dropout: Dropout on the attention weights while training.
        batch_first: Inputs are ``(B, L, E)`` rather than ``(L, B, E)``.
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        kdim: int,
        vdim: int,
        bias: bool = True,
        dropout: float = 0.0,
        batch_first: bool = False,
    ) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.kdim = kdim
        self.vdim = vdim
        self.dropout = dropout
        self.batch_first = batch_first
        self.q_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.k_proj = nn.Linear(kdim, embed_dim, bias=bias)
        self.v_proj = nn.Linear(vdim, embed_dim, bias=bias)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias)

    @classmethod
    def from_multihead_attention(cls, attention: nn.MultiheadAttention) -> SplitProjectionAttention:
        """The same attention with the weights of ``attention`` copied into separate layers."""
        if attention.bias_k is not None or attention.add_zero_attn:
            raise ValueError(
                "LoRA supports nn.MultiheadAttention without add_bias_kv and add_zero_attn"
            )
        bias = attention.in_proj_bias is not None
        reference = attention.out_proj.weight
        split = cls(
            attention.embed_dim,
            attention.num_heads,
            attention.kdim,
            attention.vdim,
            bias=bias,
            dropout=attention.dropout,
            batch_first=attention.batch_first,
        ).to(device=reference.device, dtype=reference.dtype)
        if attention._qkv_same_embed_dim:
            weights = attention.in_proj_weight.detach().chunk(3)
        else:
            weights = tuple(
                getattr(attention, f"{part}_proj_weight").detach() for part in ("q", "k", "v")
            )
        biases = attention.in_proj_bias.detach().chunk(3) if bias else (None, None, None)
        projections = (split.q_proj, split.k_proj, split.v_proj)
        with torch.no_grad():
            for layer, weight, layer_bias in zip(projections, weights, biases, strict=True):
                layer.weight.copy_(weight)
                if layer_bias is not None:
                    layer.bias.copy_(layer_bias)
            split.out_proj.load_state_dict(attention.out_proj.state_dict())
        split.train(attention.training)
        return split

    def to_multihead_attention(self) -> nn.MultiheadAttention:
        """An ``nn.MultiheadAttention`` with these weights (the layout it was built from)."""
        projections = (self.q_proj, self.k_proj, self.v_proj, self.out_proj)
        if not all(type(layer) is nn.Linear for layer in projections):
            raise RuntimeError("merge the LoRA adapters (merge_lora) before converting back")
        reference = self.out_proj.weight
        bias = self.out_proj.bias is not None
        attention = nn.MultiheadAttention(
            self.embed_dim,
            self.num_heads,
            dropout=self.dropout,
            bias=bias,
            kdim=self.kdim,
            vdim=self.vdim,
            batch_first=self.batch_first,
            device=reference.device,
            dtype=reference.dtype,
        )
        with torch.no_grad():
            if attention._qkv_same_embed_dim:
                attention.in_proj_weight.copy_(
                    torch.cat([self.q_proj.weight, self.k_proj.weight, self.v_proj.weight])
                )
            else:
                attention.q_proj_weight.copy_(self.q_proj.weight)
                attention.k_proj_weight.copy_(self.k_proj.weight)
                attention.v_proj_weight.copy_(self.v_proj.weight)
            if bias:
                attention.in_proj_bias.copy_(
                    torch.cat([self.q_proj.bias, self.k_proj.bias, self.v_proj.bias])
                )
            attention.out_proj.load_state_dict(self.out_proj.state_dict())
        attention.train(self.training)
        return attention

    def forward(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        key_padding_mask: Tensor | None = None,
        need_weights: bool = True,
        attn_mask: Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        """Attention of ``query`` ``(B, L, E)`` over ``key``/``value`` ``(B, S, kdim/vdim)``
        (sequence first when not ``batch_first``), as ``nn.MultiheadAttention.forward``.

        Returns:
            The output ``(B, L, E)`` and, with ``need_weights``, the attention weights
            ``(B, L, S)`` averaged over heads (``(B, H, L, S)`` otherwise), else ``None``.
        """
        if query.ndim != 3:
            raise ValueError(f"attention takes batched 3-D inputs, got shape {tuple(query.shape)}")
        if is_causal and attn_mask is None:
            raise ValueError("is_causal needs the causal attn_mask, as in nn.MultiheadAttention")
        if not self.batch_first:
            query, key, value = (x.transpose(0, 1) for x in (query, key, value))
        batch, target_len, source_len = query.shape[0], query.shape[1], key.shape[1]

        def heads(x: Tensor, length: int) -> Tensor:
            return x.view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)

        q = heads(self.q_proj(query), target_len)
        k = heads(self.k_proj(key), source_len)
        v = heads(self.v_proj(value), source_len)
        mask = _additive_mask(attn_mask, key_padding_mask, batch, self.num_heads, q.dtype)
        dropout = self.dropout if self.training else 0.0
        weights = None
        if need_weights:
            scores = q @ k.transpose(-2, -1) * self.head_dim**-0.5
            if mask is not None:
                scores = scores + mask
            weights = F.dropout(scores.softmax(dim=-1), dropout)
            attended = weights @ v
            if average_attn_weights:
                weights = weights.mean(dim=1)
        else:
            attended = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
        output = self.out_proj(attended.transpose(1, 2).reshape(batch, target_len, self.embed_dim))
        return (output if self.batch_first else output.transpose(0, 1)), weights


def _additive_mask(
    attn_mask: Tensor | None,
    key_padding_mask: Tensor | None,
    batch: int,
    num_heads: int,
    dtype: torch.dtype,
) -> Tensor | None:
    """MultiheadAttention's masks (boolean: ``True`` = masked out; float: added to the scores)
    as one float mask broadcasting to ``(B, H, L, S)``."""

    def additive(mask: Tensor) -> Tensor:
        if mask.dtype == torch.bool:
            return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(
                mask, float("-inf")
            )
        return mask.to(dtype)

    combined = None
    if attn_mask is not None:
        combined = additive(attn_mask)
        if combined.ndim == 3:  # (B * H, L, S)
            combined = combined.view(batch, num_heads, *combined.shape[1:])
    if key_padding_mask is not None:
        padding = additive(key_padding_mask)[:, None, None, :]
        combined = padding if combined is None else combined + padding
    return combined


def split_multihead_attention(root: nn.Module, scope: Sequence[str] = ("",)) -> int:
    """Replace every ``nn.MultiheadAttention`` under ``root`` whose path starts with one of
    ``scope`` by an equivalent :class:`SplitProjectionAttention`; returns how many."""
    found = [
        (name, module)
        for name, module in root.named_modules()
        if isinstance(module, nn.MultiheadAttention) and _in_scope(name, scope)
    ]
    for name, attention in found:
        root.set_submodule(name, SplitProjectionAttention.from_multihead_attention(attention))
    return len(found)


def restore_multihead_attention(root: nn.Module) -> int:
    """Convert every :class:`SplitProjectionAttention` under ``root`` back to
    ``nn.MultiheadAttention`` (LoRA merged first); returns how many."""
    found = [
        (name, module)
        for name, module in root.named_modules()
        if isinstance(module, SplitProjectionAttention)
    ]
    for name, split in found:
        root.set_submodule(name, split.to_multihead_attention())
    return len(found)


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
        and _in_scope(name, blocks)
    ]


def linear_layer_names(backbone: Backbone) -> list[str]:
    """Distinct last path components of the ``nn.Linear`` layers in the blocks (for errors)."""
    blocks = [f"{name}." for name, _ in backbone.blocks()]
    return sorted(
        {
            name.rsplit(".", 1)[-1]
            for name, module in backbone.named_modules()
            if isinstance(module, nn.Linear) and _in_scope(name, blocks)
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


def _in_scope(name: str, scope: Sequence[str]) -> bool:
    return any(name.startswith(prefix) for prefix in scope)
