"""Embedding heads: pooled descriptor ``(B, C)`` -> embedding ``(B, D)``.

Heads are named by spec strings ``"name:arg:arg"``: ``"none"`` (or ``"identity"``), ``"linear:D"``
and ``"mlp:D"`` / ``"mlp:H:D"`` / ``"mlp:H1:H2:D"`` (options ``dropout``, ``batchnorm``, ``activation``).
Each head exposes its output width as ``out_dim``.
"""

from __future__ import annotations

from collections.abc import Sequence
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


ACTIVATIONS: Registry[nn.Module] = Registry("activation")
"""Activations of the hidden layers of ``"mlp"`` heads, by name."""
ACTIVATIONS.register("gelu")(nn.GELU)
ACTIVATIONS.register("relu")(nn.ReLU)
ACTIVATIONS.register("silu")(nn.SiLU)
ACTIVATIONS.register("tanh")(nn.Tanh)


def hidden_layers(
    in_dim: int,
    widths: Sequence[int],
    dropout: float = 0.0,
    batchnorm: bool = True,
    activation: str = "gelu",
) -> list[nn.Module]:
    """``Linear -> [BatchNorm1d] -> activation -> Dropout`` for each width in ``widths``."""
    layers: list[nn.Module] = []
    width = in_dim
    for size in widths:
        layers.append(nn.Linear(width, int(size)))
        if batchnorm:
            layers.append(nn.BatchNorm1d(int(size)))
        layers += [ACTIVATIONS.create(activation), nn.Dropout(dropout)]
        width = int(size)
    return layers


@HEADS.register("mlp")
class MLPHead(nn.Module):
    """A multi-layer projection: ``L`` hidden layers ``Linear -> [BatchNorm] -> activation ->
    Dropout``, then a last ``Linear`` (the projection head of Chen et al., "A Simple Framework for
    Contrastive Learning of Visual Representations", ICML 2020, made as deep as asked).

    The spec's widths are the hidden widths then the output width: ``"mlp:D"`` is one hidden layer
    as wide as the input, ``"mlp:H:D"`` one of width ``H``, ``"mlp:H1:H2:D"`` two, and so on.

    Args:
        in_dim: Descriptor width ``C``.
        *widths: ``D`` alone, or the hidden widths then ``D``.
        dropout: Dropout probability after each hidden activation.
        batchnorm: ``BatchNorm1d`` after each hidden ``Linear``.
        activation: A name of :data:`ACTIVATIONS` ("gelu", "relu", "silu", "tanh").

    Attributes:
        layers: The ``nn.Sequential``; with the defaults and one hidden layer it is
            ``Linear, BatchNorm1d, GELU, Dropout, Linear``.
    """

    def __init__(
        self,
        in_dim: int,
        *widths: int,
        dropout: float = 0.0,
        batchnorm: bool = True,
        activation: str = "gelu",
    ) -> None:
        super().__init__()
        if not widths:
            raise TypeError("the mlp head needs its output width: 'mlp:D' or 'mlp:H:...:D'")
        hidden = [in_dim] if len(widths) == 1 else list(widths[:-1])
        self.out_dim = widths[-1]
        layers = hidden_layers(in_dim, hidden, dropout, batchnorm, activation)
        layers.append(nn.Linear(hidden[-1], self.out_dim))
        self.layers = nn.Sequential(*layers)

    def forward(self, descriptors: torch.Tensor) -> torch.Tensor:
        return self.layers(descriptors)
