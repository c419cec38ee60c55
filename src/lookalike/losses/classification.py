"""Losses that own one weight vector per class: margin softmax, proxies and classifier heads.

All need class labels and ``num_classes``; each owns parameters the optimiser must train. With
``positive_embeddings`` the second view is classified too (its rows share the first view's labels);
``text_embeddings`` are not used.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pytorch_metric_learning import losses as pml_losses
from torch import Tensor, nn

from lookalike.losses.base import (
    RetrievalLoss,
    register_loss,
    require_1d_labels,
    require_positive,
    stack_views,
)


class ClassifierHead(nn.Module):
    """Linear classifier on embeddings, or a cosine one (Wang et al. 2017, NormFace).

    Args:
        embedding_dim: Input width ``D``.
        num_classes: Output width ``C``.
        normalized: Logits are ``scale * cos(x, w_c)`` (no bias) instead of ``x W^T + b``.
        scale: Logit scale of the cosine classifier (> 0).
    """

    def __init__(
        self, embedding_dim: int, num_classes: int, normalized: bool = False, scale: float = 16.0
    ) -> None:
        super().__init__()
        self.linear = nn.Linear(embedding_dim, num_classes, bias=not normalized)
        self.normalized = normalized
        self.scale = scale

    def forward(self, embeddings: Tensor) -> Tensor:
        """``(N, D)`` embeddings → ``(N, C)`` logits."""
        if self.normalized:
            centres = F.normalize(self.linear.weight, dim=1)
            return self.scale * F.normalize(embeddings, dim=1) @ centres.T
        return self.linear(embeddings)


class ClassLoss(RetrievalLoss):
    """Base for losses with ``num_classes`` outputs: checks the count and the labels' range.

    Subclasses set ``criterion`` (a pml loss taking ``(rows, labels)``) or override
    :meth:`compute_loss`.
    """

    criterion: nn.Module

    needs_labels = True

    def __init__(self, num_classes: int | None) -> None:
        super().__init__()
        if num_classes is None or num_classes < 1:
            raise ValueError(
                f"loss {self.name!r} needs num_classes >= 1 (the data's label count), "
                f"got {num_classes}"
            )
        self.num_classes = num_classes

    def check_labels(self, labels: Tensor) -> Tensor:
        """``(B,)`` integer labels in ``[0, C)`` as int64; a one-line ``ValueError`` otherwise."""
        require_1d_labels(self.name, labels)
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= self.num_classes):
            raise ValueError(
                f"loss {self.name!r}: labels must lie in [0, {self.num_classes}), "
                f"got {int(labels.min())}..{int(labels.max())}"
            )
        return labels.long()

    def class_rows(
        self, embeddings: Tensor, labels: Tensor, positive_embeddings: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        """``(N, D)`` rows and ``(N,)`` labels, the second view appended when present."""
        return stack_views(embeddings, self.check_labels(labels), positive_embeddings)

    def compute_loss(
        self,
        embeddings: Tensor,
        labels: Tensor | None,
        *,
        text_embeddings: Tensor | None,
        positive_embeddings: Tensor | None,
    ) -> Tensor:
        assert labels is not None  # checked by RetrievalLoss.validate
        rows, row_labels = self.class_rows(embeddings, labels, positive_embeddings)
        return self.criterion(rows, row_labels)


@register_loss("arcface")
class ArcFaceLoss(ClassLoss):
    """Additive angular margin loss (Deng et al. 2019, ArcFace), pml's ``ArcFaceLoss``.

    Logits are ``s * cos(theta_j)`` against L2-normalised class centres, with the target's
    replaced by ``s * cos(theta_y + m)`` (by ``s * (cos(theta_y) - m sin(m))`` once
    ``theta_y > pi - m``, keeping it monotonic); then cross-entropy. Use it as the only loss, or
    as an auxiliary part of "hybrid".

    Args:
        embedding_dim: Embedding width ``D``.
        num_classes: Class count ``C``.
        margin: Angular margin ``m`` **in degrees**, as pml takes it (28.6 degrees = 0.5 rad, the
            paper's value).
        scale: Logit scale ``s`` (> 0).

    Attributes:
        criterion: The pml loss; its ``W`` parameter, ``(D, C)``, holds the class centres.
    """

    def __init__(
        self,
        *,
        embedding_dim: int,
        num_classes: int | None,
        margin: float = 28.6,
        scale: float = 64.0,
    ) -> None:
        super().__init__(num_classes)
        require_positive(self.name, "scale", scale)
        self.criterion = pml_losses.ArcFaceLoss(
            num_classes=self.num_classes, embedding_size=embedding_dim, margin=margin, scale=scale
        )


@register_loss("proxy_anchor")
class ProxyAnchorLoss(ClassLoss):
    """Proxy-Anchor loss (Kim et al. 2020, eq. 4), pml's ``ProxyAnchorLoss`` with cosine similarity.

    ``1/|P+| sum_{p in P+} log(1 + sum_{x in X_p+} exp(-alpha (s(x, p) - delta)))
    + 1/|P| sum_{p in P} log(1 + sum_{x in X_p-} exp(alpha (s(x, p) + delta)))``, where ``P+`` are
    the proxies with a positive in the batch. The paper trains the proxies with a learning rate
    100x the backbone's: give ``criterion.proxies`` its own optimiser group.

    Args:
        embedding_dim: Embedding width ``D``.
        num_classes: Class count ``C`` (one proxy each).
        margin: ``delta``.
        alpha: Scale ``alpha`` (> 0).

    Attributes:
        criterion: The pml loss; its ``proxies`` parameter is ``(C, D)``.
    """

    def __init__(
        self,
        *,
        embedding_dim: int,
        num_classes: int | None,
        margin: float = 0.1,
        alpha: float = 32.0,
    ) -> None:
        super().__init__(num_classes)
        require_positive(self.name, "alpha", alpha)
        self.criterion = pml_losses.ProxyAnchorLoss(
            num_classes=self.num_classes, embedding_size=embedding_dim, margin=margin, alpha=alpha
        )


@register_loss("cross_entropy")
class CrossEntropyLoss(ClassLoss):
    """Softmax cross-entropy of a classifier head on the embedding, with optional label smoothing.

    A classifier trained this way is a strong metric-learning baseline, best with a normalised
    (cosine) head (Zhai & Wu 2019, "Classification is a Strong Baseline for Deep Metric Learning").

    Args:
        embedding_dim: Embedding width ``D``.
        num_classes: Class count ``C``.
        label_smoothing: Mass in ``[0, 1)`` spread uniformly over classes (Szegedy et al. 2016).
        normalized: Cosine classifier ``scale * cos(x, w_c)`` instead of a linear layer.
        scale: Logit scale of the cosine classifier (> 0).

    Attributes:
        head: The :class:`ClassifierHead`.
    """

    def __init__(
        self,
        *,
        embedding_dim: int,
        num_classes: int | None,
        label_smoothing: float = 0.0,
        normalized: bool = False,
        scale: float = 16.0,
    ) -> None:
        super().__init__(num_classes)
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(
                f"loss {self.name!r}: label_smoothing must lie in [0, 1), got {label_smoothing}"
            )
        require_positive(self.name, "scale", scale)
        self.label_smoothing = label_smoothing
        self.head = ClassifierHead(
            embedding_dim, self.num_classes, normalized=normalized, scale=scale
        )

    def compute_loss(
        self,
        embeddings: Tensor,
        labels: Tensor | None,
        *,
        text_embeddings: Tensor | None,
        positive_embeddings: Tensor | None,
    ) -> Tensor:
        assert labels is not None  # checked by RetrievalLoss.validate
        rows, row_labels = self.class_rows(embeddings, labels, positive_embeddings)
        return F.cross_entropy(self.head(rows), row_labels, label_smoothing=self.label_smoothing)


@register_loss("bce")
class BCELoss(ClassLoss):
    """Multi-label binary cross-entropy of a classifier head, averaged over samples and classes.

    Labels are ``(B, C)`` multi-hot, or ``(B,)`` integer classes (one-hot encoded here).

    Args:
        embedding_dim: Embedding width ``D``.
        num_classes: Class count ``C``.
        normalized: Cosine classifier ``scale * cos(x, w_c)`` instead of a linear layer.
        scale: Logit scale of the cosine classifier (> 0).

    Attributes:
        head: The :class:`ClassifierHead`.
    """

    def __init__(
        self,
        *,
        embedding_dim: int,
        num_classes: int | None,
        normalized: bool = False,
        scale: float = 16.0,
    ) -> None:
        super().__init__(num_classes)
        require_positive(self.name, "scale", scale)
        self.head = ClassifierHead(
            embedding_dim, self.num_classes, normalized=normalized, scale=scale
        )

    def compute_loss(
        self,
        embeddings: Tensor,
        labels: Tensor | None,
        *,
        text_embeddings: Tensor | None,
        positive_embeddings: Tensor | None,
    ) -> Tensor:
        assert labels is not None  # checked by RetrievalLoss.validate
        targets = self.multi_hot(labels)
        rows = embeddings
        if positive_embeddings is not None:
            rows = torch.cat([embeddings, positive_embeddings])
            targets = torch.cat([targets, targets])
        return F.binary_cross_entropy_with_logits(self.head(rows), targets)

    def multi_hot(self, labels: Tensor) -> Tensor:
        """``(B,)`` classes or ``(B, C)`` multi-hot → ``(B, C)`` float targets."""
        if labels.ndim == 1:
            return F.one_hot(self.check_labels(labels), self.num_classes).float()
        if labels.shape[1] != self.num_classes:
            raise ValueError(
                f"loss {self.name!r}: multi-hot labels must be (B, {self.num_classes}), "
                f"got {tuple(labels.shape)}"
            )
        return labels.float()
