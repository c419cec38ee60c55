"""Symmetric InfoNCE over paired embeddings, learned temperature (Radford et al. 2021, CLIP)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lookalike.losses.base import RetrievalLoss, register_loss, require_positive

PAIR_SOURCES = ("auto", "text", "views")


@register_loss("clip")
class CLIPLoss(RetrievalLoss):
    """CLIP's contrastive loss on image-text pairs, or on two views of each image.

    With ``I`` and ``T`` the L2-normalised ``(B, D)`` embeddings of the two sides, the logits are
    ``scale * I T^T`` and the loss is the mean of the cross-entropies of rows and of columns
    against the diagonal. As in CLIP, ``scale = exp(logit_scale)`` is learned, starts at
    ``1 / 0.07`` and is capped at 100 (past the cap it gets no gradient). Labels are not used:
    two images of one class in a batch are negatives of each other, as in CLIP.

    Args:
        init_temperature: Initial temperature ``1 / scale`` (> 0).
        max_scale: Cap on ``scale`` (> 0).
        learn_temperature: Train ``logit_scale``; a fixed temperature otherwise.
        pairs: Which partner rows to use: "text" (``text_embeddings``), "views"
            (``positive_embeddings``) or "auto" (text when the batch has it, else views).

    Attributes:
        logit_scale: Scalar parameter, ``log(scale)``.
    """

    needs_pairs = True

    def __init__(
        self,
        init_temperature: float = 0.07,
        max_scale: float = 100.0,
        learn_temperature: bool = True,
        pairs: str = "auto",
    ) -> None:
        super().__init__()
        require_positive(self.name, "init_temperature", init_temperature)
        require_positive(self.name, "max_scale", max_scale)
        if pairs not in PAIR_SOURCES:
            raise ValueError(
                f"loss {self.name!r}: unknown pairs {pairs!r}; valid: {', '.join(PAIR_SOURCES)}"
            )
        self.logit_scale = nn.Parameter(
            torch.tensor(math.log(1.0 / init_temperature)), requires_grad=learn_temperature
        )
        self.max_scale = max_scale
        self.pairs = pairs

    def validate(
        self, *, has_labels: bool, has_text: bool, has_views: bool, has_view_pairs: bool = False
    ) -> None:
        """As :meth:`RetrievalLoss.validate`, also checking the chosen ``pairs`` source."""
        super().validate(
            has_labels=has_labels, has_text=has_text, has_views=has_views,
            has_view_pairs=has_view_pairs,
        )
        if self.pairs == "text" and not has_text:
            raise ValueError(f"loss {self.name!r} with pairs='text' needs a caption column")
        if self.pairs == "views" and not has_views:
            raise ValueError(f"loss {self.name!r} with pairs='views' needs two views of each image")

    @property
    def scale(self) -> Tensor:
        """The logit scale ``min(exp(logit_scale), max_scale)``, a scalar tensor."""
        return self.logit_scale.exp().clamp(max=self.max_scale)

    def compute_loss(
        self,
        embeddings: Tensor,
        labels: Tensor | None,
        *,
        text_embeddings: Tensor | None,
        positive_embeddings: Tensor | None,
    ) -> Tensor:
        partners = positive_embeddings if self.pairs == "views" else text_embeddings
        if partners is None:
            partners = positive_embeddings
        assert partners is not None  # checked by validate
        logits = self.scale * F.normalize(embeddings, dim=1) @ F.normalize(partners, dim=1).T
        targets = torch.arange(logits.shape[0], device=logits.device)
        return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2
