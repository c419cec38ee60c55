"""Pair- and triplet-based metric losses: pytorch-metric-learning losses behind one contract.

Each takes a ``distance`` ("cosine", the default, or "l2") and an optional ``miner`` (see
:mod:`lookalike.losses.miners`). They train on class labels, on two views of each image, or both:
with ``positive_embeddings`` the second view's rows are appended with the same labels, or, without
labels, with instance labels so views ``i`` and ``i + B`` are the only positives (SimCLR's setting,
pml's ``SelfSupervisedLoss``). ``text_embeddings`` are not used by these losses.

Reductions are pml's: "triplet", "contrastive" and "supcon" average the terms greater than zero;
"multi_similarity" averages over anchors; "ntxent" over positive pairs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning.losses import BaseMetricLossFunction
from pytorch_metric_learning.miners import BaseMiner
from torch import Tensor

from lookalike.losses.base import (
    RetrievalLoss,
    make_distance,
    register_loss,
    require_1d_labels,
    require_positive,
    stack_views,
)
from lookalike.losses.miners import create_miner

MinerSpec = Mapping[str, Any] | str | None


class PairMetricLoss(RetrievalLoss):
    """A pml metric loss and its optional miner, applied to the batch's rows (and second view).

    Args:
        criterion: The pml loss, built with its distance.
        miner: A pml miner built with the same distance, or ``None`` for every tuple of the batch.
    """

    needs_labels_or_views = True

    def __init__(self, criterion: BaseMetricLossFunction, miner: BaseMiner | None) -> None:
        super().__init__()
        self.criterion = criterion
        self.miner = miner

    def compute_loss(
        self,
        embeddings: Tensor,
        labels: Tensor | None,
        *,
        text_embeddings: Tensor | None,
        positive_embeddings: Tensor | None,
    ) -> Tensor:
        if labels is not None:
            require_1d_labels(self.name, labels)
        rows, row_labels = stack_views(embeddings, labels, positive_embeddings)
        indices = None if self.miner is None else self.miner(rows, row_labels)
        return self.criterion(rows, row_labels, indices)


@register_loss("triplet")
class TripletLoss(PairMetricLoss):
    """Triplet margin loss, ``[d(a, p) - d(a, n) + margin]_+`` (Schroff et al. 2015, FaceNet).

    With a similarity (cosine) the sense flips: ``[s(a, n) - s(a, p) + margin]_+``. Without a miner
    every (anchor, positive, negative) triplet of the batch is used.

    Args:
        margin: Required gap between positive and negative distances.
        distance: "cosine" or "l2".
        normalize_embeddings: L2-normalise rows before the "l2" distance (pml's default).
        miner: "all", "semihard", "hard", "batch_hard", "multi_similarity", a mapping with options,
            or ``None``.
    """

    def __init__(
        self,
        margin: float = 0.2,
        distance: str = "cosine",
        normalize_embeddings: bool = True,
        miner: MinerSpec = None,
    ) -> None:
        pml_distance = make_distance(distance, normalize_embeddings)
        super().__init__(
            pml_losses.TripletMarginLoss(margin=margin, distance=pml_distance),
            create_miner(
                miner, distance=make_distance(distance, normalize_embeddings), margin=margin
            ),
        )


@register_loss("contrastive")
class ContrastiveLoss(PairMetricLoss):
    """Contrastive loss on pairs (Hadsell, Chopra & LeCun 2006), unsquared hinges as in pml.

    With "l2": ``[d_p - pos_margin]_+`` and ``[neg_margin - d_n]_+``; with "cosine":
    ``[pos_margin - s_p]_+`` and ``[s_n - neg_margin]_+``. Each kind is averaged over its non-zero
    terms and the two averages are added.

    Args:
        pos_margin: Defaults to 1.0 for "cosine", 0.0 for "l2".
        neg_margin: Defaults to 0.0 for "cosine", 1.0 for "l2".
        distance: "cosine" or "l2".
        normalize_embeddings: L2-normalise rows before the "l2" distance.
        miner: As for "triplet".
    """

    def __init__(
        self,
        pos_margin: float | None = None,
        neg_margin: float | None = None,
        distance: str = "cosine",
        normalize_embeddings: bool = True,
        miner: MinerSpec = None,
    ) -> None:
        pml_distance = make_distance(distance, normalize_embeddings)
        similarity = pml_distance.is_inverted
        if pos_margin is None:
            pos_margin = 1.0 if similarity else 0.0
        if neg_margin is None:
            neg_margin = 0.0 if similarity else 1.0
        super().__init__(
            pml_losses.ContrastiveLoss(
                pos_margin=pos_margin, neg_margin=neg_margin, distance=pml_distance
            ),
            create_miner(miner, distance=make_distance(distance, normalize_embeddings)),
        )


@register_loss("multi_similarity")
class MultiSimilarityLoss(PairMetricLoss):
    """Multi-similarity loss (Wang et al. 2019, eq. 7), averaged over anchors.

    Per anchor ``i``: ``1/alpha log(1 + sum_P exp(-alpha (S_ik - base)))
    + 1/beta log(1 + sum_N exp(beta (S_ik - base)))``.

    Args:
        alpha: Weight of positive pairs.
        beta: Weight of negative pairs.
        base: The similarity margin ``lambda``.
        distance: "cosine" (the paper's) or "l2".
        normalize_embeddings: L2-normalise rows before the "l2" distance.
        miner: As for "triplet"; the paper pairs this loss with "multi_similarity".
    """

    def __init__(
        self,
        alpha: float = 2.0,
        beta: float = 50.0,
        base: float = 0.5,
        distance: str = "cosine",
        normalize_embeddings: bool = True,
        miner: MinerSpec = None,
    ) -> None:
        super().__init__(
            pml_losses.MultiSimilarityLoss(
                alpha=alpha,
                beta=beta,
                base=base,
                distance=make_distance(distance, normalize_embeddings),
            ),
            create_miner(miner, distance=make_distance(distance, normalize_embeddings)),
        )


@register_loss("ntxent")
class NTXentLoss(PairMetricLoss):
    """NT-Xent / InfoNCE (Chen et al. 2020, SimCLR), the self-supervised term on two views.

    For each positive pair ``(a, p)``:
    ``-log(exp(s_ap / t) / (exp(s_ap / t) + sum_n exp(s_an / t)))``, the sum over ``a``'s
    negatives; averaged over positive pairs. On two views without labels,
    the positives of row ``i`` are its other view only.

    Args:
        temperature: Softmax temperature ``t`` (> 0).
        distance: "cosine" or "l2" (negated distances serve as similarities).
        normalize_embeddings: L2-normalise rows before the "l2" distance.
        miner: As for "triplet".
    """

    def __init__(
        self,
        temperature: float = 0.07,
        distance: str = "cosine",
        normalize_embeddings: bool = True,
        miner: MinerSpec = None,
    ) -> None:
        require_positive("ntxent", "temperature", temperature)
        super().__init__(
            pml_losses.NTXentLoss(
                temperature=temperature, distance=make_distance(distance, normalize_embeddings)
            ),
            create_miner(miner, distance=make_distance(distance, normalize_embeddings)),
        )


@register_loss("supcon")
class SupConLoss(PairMetricLoss):
    """Supervised contrastive loss (Khosla et al. 2020, eq. 2, ``L_out``).

    Per anchor ``i`` with positives ``P(i)``: ``-1/|P(i)| sum_p log(exp(s_ip / t) /
    sum_{a != i} exp(s_ia / t))``; averaged over anchors with a non-zero loss.

    Args:
        temperature: Softmax temperature ``t`` (> 0).
        distance: "cosine" or "l2".
        normalize_embeddings: L2-normalise rows before the "l2" distance.
        miner: As for "triplet".
    """

    def __init__(
        self,
        temperature: float = 0.1,
        distance: str = "cosine",
        normalize_embeddings: bool = True,
        miner: MinerSpec = None,
    ) -> None:
        require_positive("supcon", "temperature", temperature)
        super().__init__(
            pml_losses.SupConLoss(
                temperature=temperature, distance=make_distance(distance, normalize_embeddings)
            ),
            create_miner(miner, distance=make_distance(distance, normalize_embeddings)),
        )
