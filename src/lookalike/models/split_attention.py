"""``nn.MultiheadAttention`` with separate projection layers, so LoRA can adapt them.

open_clip's ViT blocks use ``torch.nn.MultiheadAttention``, whose input projection is one bare
``in_proj_weight`` parameter: peft cannot put an adapter on it without re-merging weights around
every forward pass. :func:`split_multihead_attention` replaces each such module by
:class:`SplitProjectionAttention` (identical outputs, ``nn.Linear`` projections ``q_proj``,
``k_proj``, ``v_proj``, ``out_proj``); :func:`restore_multihead_attention` converts back after
the adapters are merged (:mod:`lookalike.models.lora`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


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
        if isinstance(module, nn.MultiheadAttention) and in_scope(name, scope)
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


def in_scope(name: str, scope: Sequence[str]) -> bool:
    """Whether module path ``name`` lies under one of the ``scope`` prefixes ("" is all)."""
    return any(name.startswith(prefix) for prefix in scope)
