"""Retrieval metrics of a ranking: pure functions of which retrieved items are relevant.

Every function takes ``matches``, a ``(Q, K)`` boolean array whose entry ``[q, k]`` says whether the
``(k+1)``-th item retrieved for query ``q`` is relevant, and, where the metric needs it,
``num_relevant``, a ``(Q,)`` integer array: how many relevant items the gallery holds for each query
(the query's own image and junk items excluded). ``reduction="mean"`` returns the average over the
``Q`` rows as a float, ``reduction="none"`` the ``(Q,)`` float64 per-query values.

A query with ``num_relevant == 0`` scores 0 on every metric here (as in Kaggle's ``apk``); dropping
such queries from the average, as pytorch-metric-learning does, is the caller's choice
(:func:`lookalike.metrics.retrieval.evaluate_retrieval` does it by default).

"Junk" items (Philbin et al., "Object retrieval with large vocabularies and fast spatial matching",
CVPR 2007; cirtorch's ``compute_map``) are neither relevant nor irrelevant: they are removed from
the ranking before it is scored, see :func:`remove_junk`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import numpy as np

Reduction = Literal["mean", "none"]

DEFAULT_TOPK_WEIGHTS: dict[int, float] = {1: 600.0, 5: 300.0, 10: 100.0}


def _as_matches(matches: np.ndarray) -> np.ndarray:
    matches = np.asarray(matches)
    if matches.ndim != 2:
        raise ValueError(f"matches must be a (Q, K) boolean array, got shape {matches.shape}")
    return matches.astype(bool, copy=False)


def _as_num_relevant(num_relevant: np.ndarray, matches: np.ndarray) -> np.ndarray:
    num_relevant = np.asarray(num_relevant, dtype=np.int64)
    if num_relevant.shape != (matches.shape[0],):
        raise ValueError(
            f"num_relevant must have shape ({matches.shape[0]},) to match matches, "
            f"got {num_relevant.shape}"
        )
    if (num_relevant < 0).any():
        raise ValueError("num_relevant must be >= 0 for every query")
    if (matches.sum(axis=1) > num_relevant).any():
        raise ValueError("a row of matches holds more relevant items than its num_relevant")
    return num_relevant


def _check_k(k: int, matches: np.ndarray) -> None:
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if k > matches.shape[1]:
        raise ValueError(
            f"k={k} exceeds the {matches.shape[1]} retrieved items per query; retrieve at least k"
        )


def _reduce(values: np.ndarray, reduction: Reduction) -> float | np.ndarray:
    if reduction == "none":
        return values
    if reduction == "mean":
        return float(values.mean()) if values.size else float("nan")
    raise ValueError(f"unknown reduction {reduction!r}; valid names: mean, none")


def _precision_at_hits(matches: np.ndarray) -> np.ndarray:
    """``(Q, K)`` float64: precision at rank ``k`` where item ``k`` is relevant, else 0."""
    ranks = np.arange(1, matches.shape[1] + 1, dtype=np.float64)
    return np.cumsum(matches, axis=1) / ranks * matches


def recall_at_k(
    matches: np.ndarray, k: int, reduction: Reduction = "mean"
) -> float | np.ndarray:
    """Recall@K as used for SOP, CUB and Cars (Song et al., "Deep Metric Learning via Lifted
    Structured Feature Embedding", CVPR 2016): 1 if a relevant item is among the first ``k``.

    Also called Acc@K or hit rate; Recall@1 equals pml's ``precision_at_1``.

    Args:
        matches: ``(Q, K)`` bool, ``K >= k``.
        k: Cut-off.
        reduction: "mean" or "none".
    """
    matches = _as_matches(matches)
    _check_k(k, matches)
    return _reduce(matches[:, :k].any(axis=1).astype(np.float64), reduction)


def precision_at_k(
    matches: np.ndarray, k: int, reduction: Reduction = "mean"
) -> float | np.ndarray:
    """Precision@K: the fraction of the first ``k`` retrieved items that are relevant.

    Args:
        matches: ``(Q, K)`` bool, ``K >= k``.
        k: Cut-off (the denominator, even where fewer than ``k`` relevant items exist).
        reduction: "mean" or "none".
    """
    matches = _as_matches(matches)
    _check_k(k, matches)
    return _reduce(matches[:, :k].sum(axis=1) / float(k), reduction)


def map_at_k(
    matches: np.ndarray, num_relevant: np.ndarray, k: int, reduction: Reduction = "mean"
) -> float | np.ndarray:
    """Kaggle's MAP@K: ``sum_{i<=k} P(i) rel(i) / min(num_relevant, k)``.

    ``P(i)`` is the precision of the first ``i`` items and ``rel(i)`` whether item ``i`` is
    relevant. With a single relevant item (most Kaggle retrieval tasks) this is ``1 / rank`` of the
    first hit within ``k``, and 0 without one.

    Args:
        matches: ``(Q, K)`` bool, ``K >= k``.
        num_relevant: ``(Q,)`` int, relevant items in the gallery for each query.
        k: Cut-off.
        reduction: "mean" or "none".
    """
    matches = _as_matches(matches)
    _check_k(k, matches)
    num_relevant = _as_num_relevant(num_relevant, matches)
    summed = _precision_at_hits(matches[:, :k]).sum(axis=1)
    return _reduce(summed / np.maximum(np.minimum(num_relevant, k), 1), reduction)


def _check_covers_r(matches: np.ndarray, num_relevant: np.ndarray) -> None:
    if num_relevant.size and num_relevant.max() > matches.shape[1]:
        raise ValueError(
            f"a query has {num_relevant.max()} relevant items but only {matches.shape[1]} "
            "retrieved items are given; retrieve at least max(num_relevant) per query"
        )


def map_at_r(
    matches: np.ndarray, num_relevant: np.ndarray, reduction: Reduction = "mean"
) -> float | np.ndarray:
    """MAP@R (Musgrave, Belongie, Lim, "A Metric Learning Reality Check", ECCV 2020).

    With ``R = num_relevant``: ``sum_{i<=R} P(i) rel(i) / R``; pml's
    ``mean_average_precision_at_r``.

    Args:
        matches: ``(Q, K)`` bool with ``K >= max(num_relevant)``.
        num_relevant: ``(Q,)`` int.
        reduction: "mean" or "none".
    """
    matches = _as_matches(matches)
    num_relevant = _as_num_relevant(num_relevant, matches)
    _check_covers_r(matches, num_relevant)
    within_r = np.arange(matches.shape[1]) < num_relevant[:, None]
    summed = (_precision_at_hits(matches) * within_r).sum(axis=1)
    return _reduce(summed / np.maximum(num_relevant, 1), reduction)


def r_precision(
    matches: np.ndarray, num_relevant: np.ndarray, reduction: Reduction = "mean"
) -> float | np.ndarray:
    """R-Precision: the fraction of the first ``R = num_relevant`` items that are relevant.

    Args:
        matches: ``(Q, K)`` bool with ``K >= max(num_relevant)``.
        num_relevant: ``(Q,)`` int.
        reduction: "mean" or "none".
    """
    matches = _as_matches(matches)
    num_relevant = _as_num_relevant(num_relevant, matches)
    _check_covers_r(matches, num_relevant)
    within_r = np.arange(matches.shape[1]) < num_relevant[:, None]
    return _reduce((matches & within_r).sum(axis=1) / np.maximum(num_relevant, 1), reduction)


def average_precision_from_ranks(positive_ranks: np.ndarray) -> float:
    """Average precision of one query over the full ranking, from where its relevant items are.

    ``AP = (1/R) sum_j j / rank_j`` over the ``R`` relevant items sorted by rank: the area under
    the step precision-recall curve, pml's ``mean_average_precision`` with ``k=None`` (cirtorch's
    ``compute_ap`` averages the steps' two ends, a trapezoid, instead).

    Args:
        positive_ranks: ``(R,)`` distinct 1-based ranks of the relevant items (junk removed).

    Returns:
        AP in ``[0, 1]``; 0 when ``R == 0``.
    """
    ranks = np.sort(np.asarray(positive_ranks, dtype=np.int64).ravel())
    if ranks.size == 0:
        return 0.0
    if ranks[0] < 1 or (np.diff(ranks) == 0).any():
        raise ValueError("positive_ranks must be distinct 1-based ranks")
    return float(np.mean(np.arange(1, ranks.size + 1) / ranks))


def weighted_topk(
    matches: np.ndarray,
    weights: Mapping[int, float] | None = None,
    reduction: Reduction = "mean",
) -> float | np.ndarray:
    """Competition score ``sum_k weight_k * Acc@k`` with ``Acc@k`` = :func:`recall_at_k`.

    The default weights give ``600 Acc@1 + 300 Acc@5 + 100 Acc@10`` (at most 1000).

    Args:
        matches: ``(Q, K)`` bool, ``K >= max(weights)``.
        weights: ``{k: weight}``; :data:`DEFAULT_TOPK_WEIGHTS` when None.
        reduction: "mean" or "none".
    """
    weights = DEFAULT_TOPK_WEIGHTS if weights is None else weights
    if not weights:
        raise ValueError("weights must name at least one cut-off k, e.g. {1: 600, 5: 300}")
    matches = _as_matches(matches)
    score = np.zeros(matches.shape[0], dtype=np.float64)
    for k, weight in weights.items():
        score += float(weight) * recall_at_k(matches, k, reduction="none")
    return _reduce(score, reduction)


def remove_junk(matches: np.ndarray, junk: np.ndarray) -> np.ndarray:
    """Drop junk items from each ranking, moving the later items up (cirtorch ``compute_map``).

    Args:
        matches: ``(Q, K)`` bool.
        junk: ``(Q, K)`` bool, True where the retrieved item is junk for that query.

    Returns:
        ``(Q, K)`` bool: the non-junk items in their order, padded with False at the end. Only the
        first ``K - junk.sum(1).max()`` columns are complete; retrieve that many more items.
    """
    matches = _as_matches(matches)
    junk = np.asarray(junk, dtype=bool)
    if junk.shape != matches.shape:
        raise ValueError(f"junk {junk.shape} must have the shape of matches {matches.shape}")
    order = np.argsort(junk, axis=1, kind="stable")
    return np.take_along_axis(matches & ~junk, order, axis=1)
