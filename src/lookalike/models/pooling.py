"""Global pooling: backbone features -> one descriptor ``(B, C)`` per image.

Every pooling takes feature maps ``(B, C, h, w)`` or tokens ``(B, N, C)``; on tokens of a model
with a CLS token (``has_cls_token=True``, CLS at index 0) the spatial poolings use the patch
tokens only. ``"cls"`` takes the CLS token, ``"identity"`` passes pooled ``(B, C)`` features on.
"""

from __future__ import annotations

import torch
from torch import nn

from lookalike.registry import Registry

POOLINGS = Registry[nn.Module]("pooling")


class _SpatialPooling(nn.Module):
    """Base of the poolings that reduce over positions: the ``(B, C, P)`` view they share."""

    def __init__(self, has_cls_token: bool = False) -> None:
        super().__init__()
        self.has_cls_token = has_cls_token

    def positions(self, features: torch.Tensor) -> torch.Tensor:
        """``(B, C, h, w)`` or ``(B, N, C)`` -> ``(B, C, P)`` over positions / patch tokens."""
        if features.ndim == 4:
            return features.flatten(2)
        if features.ndim == 3:
            patches = features[:, 1:] if self.has_cls_token else features
            if patches.shape[1] == 0:
                raise ValueError(f"{type(self).__name__}: the tokens hold no patch token")
            return patches.transpose(1, 2)
        raise ValueError(
            f"{type(self).__name__} needs (B, C, h, w) maps or (B, N, C) tokens, got shape "
            f"{tuple(features.shape)}; use pool='identity' for pooled features"
        )


@POOLINGS.register("gap")
class GlobalAveragePooling(_SpatialPooling):
    """Mean over spatial positions (maps) or patch tokens (tokens): ``(B, C)``."""

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.positions(features).mean(dim=-1)


@POOLINGS.register("max")
class GlobalMaxPooling(_SpatialPooling):
    """Maximum over spatial positions or patch tokens (MAC; Tolias, Sicre and Jégou,
    "Particular object retrieval with integral max-pooling of CNN activations", ICLR 2016)."""

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.positions(features).amax(dim=-1)


@POOLINGS.register("gem")
class GeneralizedMeanPooling(_SpatialPooling):
    """Generalized-mean pooling (Radenović, Tolias and Chum, "Fine-tuning CNN Image Retrieval
    with No Human Annotation", TPAMI 2018): ``f_c = (mean_p clamp(x_cp, eps) ** p) ** (1 / p)``.

    ``p = 1`` is average pooling and ``p -> inf`` max pooling; ``p`` is learned by default.
    Activations are clamped at ``eps``, so negative token values count as ``eps``.

    Args:
        has_cls_token: Whether tokens carry a CLS token at index 0 (left out of the mean).
        p: Initial exponent.
        eps: Lower clamp keeping the power defined.
        learnable: Whether ``p`` is a trained parameter.
    """

    def __init__(
        self, has_cls_token: bool = False, p: float = 3.0, eps: float = 1e-6, learnable: bool = True
    ) -> None:
        super().__init__(has_cls_token)
        if p <= 0:
            raise ValueError(f"GeM p must be positive, got {p}")
        self.p = nn.Parameter(torch.tensor(float(p)), requires_grad=learnable)
        self.eps = eps

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        positions = self.positions(features).clamp(min=self.eps)
        return positions.pow(self.p).mean(dim=-1).pow(1.0 / self.p)

    def extra_repr(self) -> str:
        return f"p={self.p.item():.4f}, eps={self.eps}"


@POOLINGS.register("cls")
class ClsTokenPooling(nn.Module):
    """The CLS token ``tokens[:, 0]`` of a ``(B, N, C)`` sequence."""

    def __init__(self, has_cls_token: bool = False) -> None:
        super().__init__()
        if not has_cls_token:
            raise ValueError(
                "pool='cls' needs a backbone whose tokens start with a CLS token; "
                "use 'gap', 'gem' or 'max' instead"
            )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if features.ndim != 3:
            raise ValueError(
                f"pool='cls' needs (B, N, C) tokens, got shape {tuple(features.shape)}"
            )
        return features[:, 0]


@POOLINGS.register("identity")
class IdentityPooling(nn.Module):
    """Pooled ``(B, C)`` features, passed on unchanged."""

    def __init__(self, has_cls_token: bool = False) -> None:
        super().__init__()

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if features.ndim != 2:
            raise ValueError(
                f"pool='identity' needs pooled (B, C) features, got shape {tuple(features.shape)}; "
                "use 'gap', 'gem', 'max' or 'cls'"
            )
        return features


def resolve_pooling(pool: str, output_kind: str, has_cls_token: bool) -> str:
    """The pooling name ``pool`` stands for (``"auto"`` resolved), checked against the features.

    ``"auto"`` is ``"cls"`` for tokens with a CLS token, ``"identity"`` for pooled features and
    ``"gap"`` otherwise.
    """
    name = pool.lower()
    if name == "auto":
        if output_kind == "pooled":
            return "identity"
        return "cls" if output_kind == "tokens" and has_cls_token else "gap"
    POOLINGS.get(name)
    if output_kind == "pooled" and name != "identity":
        raise ValueError(
            f"pool={pool!r} cannot pool features that are already pooled; use 'identity'"
        )
    if output_kind != "pooled" and name == "identity":
        raise ValueError(f"pool='identity' needs pooled features, the backbone gives {output_kind}")
    return name
