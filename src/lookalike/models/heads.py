"""Embedding heads: pooled descriptor ``(B, C)`` -> embedding ``(B, D)``.

Heads are named by spec strings ``"name:arg:arg"``: ``"none"`` (or ``"identity"``), ``"linear:D"``
and ``"mlp:D"`` / ``"mlp:H:D"``. Each head exposes its output width as ``out_dim``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from lookalike.registry import Registry

HEADS = Registry[nn.Module]("head")


def parse_head_spec(spec: str) -> tuple[str, list[int]]:
    """``"mlp:1024:256"`` -> ``("mlp", [1024, 256])``; integer arguments only."""
    name, *raw_args = spec.split(":")
    HEADS.get(name)
    try:
        args = [int(arg) for arg in raw_args]
    except ValueError:
        raise ValueError(
            f"head spec {spec!r}: arguments must be integers, e.g. 'linear:256'"
        ) from None
    if any(arg <= 0 for arg in args):
        raise ValueError(f"head spec {spec!r}: widths must be positive")
    return name.lower(), args


def create_head(spec: str, in_dim: int, **kwargs: Any) -> nn.Module:
    """Build the head ``spec`` names on ``in_dim``-wide descriptors (``kwargs``: ``dropout``)."""
    name, args = parse_head_spec(spec)
    try:
        return HEADS.create(name, in_dim, *args, **kwargs)
    except TypeError as exc:
        raise ValueError(f"head spec {spec!r} with options {kwargs}: {exc}") from exc


@HEADS.register("none")
@HEADS.register("identity")
class IdentityHead(nn.Module):
    """No head: the embedding is the pooled descriptor ``(B, C)``."""

    def __init__(self, in_dim: int) -> None:
        super().__init__()
        self.out_dim = in_dim

    def forward(self, descriptors: torch.Tensor) -> torch.Tensor:
        return descriptors


@HEADS.register("linear")
class LinearHead(nn.Module):
    """Dropout then a linear projection ``(B, C) -> (B, D)``, as in the whitening/projection layer
    of Radenović et al., TPAMI 2018 (learned end to end).

    Args:
        in_dim: Descriptor width ``C``.
        out_dim: Embedding width ``D``.
        dropout: Dropout probability before the projection.
    """

    def __init__(self, in_dim: int, out_dim: int, *, dropout: float = 0.0) -> None:
        super().__init__()
        self.out_dim = out_dim
        self.dropout = nn.Dropout(dropout)
        self.projection = nn.Linear(in_dim, out_dim)

    def forward(self, descriptors: torch.Tensor) -> torch.Tensor:
        return self.projection(self.dropout(descriptors))


@HEADS.register("mlp")
class MLPHead(nn.Module):
    """Two-layer projection ``Linear -> BatchNorm -> GELU -> Dropout -> Linear`` (the projection
    head of Chen et al., "A Simple Framework for Contrastive Learning of Visual
    Representations", ICML 2020).

    ``"mlp:D"`` keeps the hidden width equal to the input width; ``"mlp:H:D"`` sets it.

    Args:
        in_dim: Descriptor width ``C``.
        first: ``D`` when ``second`` is omitted, else the hidden width ``H``.
        second: ``D`` when given.
        dropout: Dropout probability after the activation.
    """

    def __init__(
        self, in_dim: int, first: int, second: int | None = None, *, dropout: float = 0.0
    ) -> None:
        super().__init__()
        hidden, out_dim = (in_dim, first) if second is None else (first, second)
        self.out_dim = out_dim
        self.layers = nn.Sequential(
            nn.Linear(in_dim, hidden),
            nn.BatchNorm1d(hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, out_dim),
        )

    def forward(self, descriptors: torch.Tensor) -> torch.Tensor:
        return self.layers(descriptors)
