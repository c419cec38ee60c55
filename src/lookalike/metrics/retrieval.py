"""Retrieval metrics of a :class:`~lookalike.ranking.Ranking`: Recall@K, Precision@K, mAP,
Kaggle MAP@K, MAP@R and the weighted top-k score.

Every metric follows from the ranks of the relevant gallery items, which the ranking holds for
every query (not only its top-k), so the values are exact for any gallery size.
:func:`evaluate_retrieval` ranks embeddings with :func:`lookalike.ranking.rank` and scores them in
one call.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from lookalike.index.result import SearchResult
from lookalike.metrics.ranking import DEFAULT_TOPK_WEIGHTS, remove_junk
from lookalike.ranking import Ranking, encode_labels, rank, relevance

logger = logging.getLogger(__name__)


@dataclass
class PerQueryMetrics:
    """Per-query values behind a summary, for reports and error analysis.

    Attributes:
        values: ``(Q,)`` float64 per metric, under the keys of the summary (``recall@1``, ``map``,
            ``weighted_topk``, ...) plus ``r_precision``. The summary value is the mean over the
            ``evaluated`` rows.
        num_relevant: ``(Q,)`` int64 relevant gallery items per query (self and junk excluded).
        first_positive_rank: ``(Q,)`` int64 1-based rank of the first relevant item, 0 if none.
        evaluated: ``(Q,)`` bool, the queries counted in the summary.
        neighbours: The ranking's top gallery rows of each query, self and junk removed.
    """

    values: dict[str, np.ndarray]
    num_relevant: np.ndarray
    first_positive_rank: np.ndarray
    evaluated: np.ndarray
    neighbours: SearchResult


@dataclass
class RetrievalMetrics:
    """The summary ``{name: value}`` and the per-query values it averages."""

    summary: dict[str, float]
    per_query: PerQueryMetrics


def relevance_from_labels(
    retrieved_indices: np.ndarray,
    query_labels: Iterable[Hashable],
    gallery_labels: Iterable[Hashable],
    self_index: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``matches`` and ``num_relevant`` of a top-k list, for :mod:`lookalike.metrics.ranking`.

    Turns any top-k search (e.g. ``SearchResult.indices`` of a FAISS index) into relevance flags
    with the library's one relevance rule (:func:`lookalike.ranking.relevance`).

    Args:
        retrieved_indices: ``(Q, K)`` int gallery rows, best first, -1 for missing neighbours.
        query_labels: ``Q`` labels.
        gallery_labels: ``N`` labels.
        self_index: ``(Q,)`` gallery row of each query's own image, or -1; that row is removed from
            the ranking (later items move up, the last column becomes False) and not counted as
            relevant.

    Returns:
        ``matches (Q, K)`` bool and ``num_relevant (Q,)`` int64.
    """
    codes = encode_labels(query_labels, gallery_labels, allow_unlabelled=False)
    indices = np.asarray(retrieved_indices, dtype=np.int64)
    matches = relevance(indices, codes)
    num_relevant = codes.num_relevant()
    if self_index is not None:
        self_index = np.asarray(self_index, dtype=np.int64)
        if self_index.shape != (len(codes.query),):
            raise ValueError(
                f"self_index must have shape ({len(codes.query)},), got {self_index.shape}"
            )
        if len(self_index) and (self_index.min() < -1 or self_index.max() >= len(codes.gallery)):
            raise ValueError(f"self_index must hold gallery rows in [0, {len(codes.gallery)}) or -1")
        own = np.where(self_index[:, None] >= 0, indices == self_index[:, None], False)
        matches = remove_junk(matches, own & (indices >= 0))
        own_relevant = relevance(self_index[:, None], codes)[:, 0]
        num_relevant = num_relevant - own_relevant
    return matches, num_relevant.astype(np.int64)


def _metrics_from_ranks(
    rows: np.ndarray,
    ranks: np.ndarray,
    num_queries: int,
    recall_ks: Sequence[int],
    precision_ks: Sequence[int],
    map_k: int,
    weights: Mapping[int, float],
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Per-query metrics from the sorted ``(row, rank)`` of every relevant item (see ranking.py)."""
    num_relevant = np.bincount(rows, minlength=num_queries)
    starts = np.cumsum(num_relevant) - num_relevant
    hit_number = np.arange(len(rows)) - starts[rows] + 1
    precision_at_hit = hit_number / ranks
    within_r = ranks <= num_relevant[rows]

    def per_query(weights_per_hit: np.ndarray) -> np.ndarray:
        return np.bincount(rows, weights=weights_per_hit, minlength=num_queries)

    denominator = np.maximum(num_relevant, 1)
    first_rank = np.zeros(num_queries, dtype=np.int64)
    has_positive = num_relevant > 0
    first_rank[has_positive] = ranks[starts[has_positive]]

    def recall(k: int) -> np.ndarray:
        return (has_positive & (first_rank <= k)).astype(np.float64)

    values = {f"recall@{k}": recall(k) for k in recall_ks}
    values.update({f"precision@{k}": per_query(ranks <= k) / k for k in precision_ks})
    values["map"] = per_query(precision_at_hit) / denominator
    values[f"map@{map_k}"] = per_query(precision_at_hit * (ranks <= map_k)) / np.maximum(
        np.minimum(num_relevant, map_k), 1
    )
    values["map@r"] = per_query(precision_at_hit * within_r) / denominator
    values["weighted_topk"] = sum(
        (float(weight) * recall(k) for k, weight in weights.items()), np.zeros(num_queries)
    )
    values["r_precision"] = per_query(within_r) / denominator
    return values, num_relevant.astype(np.int64), first_rank


def _check_ks(ks: Iterable[int], name: str, allow_empty: bool) -> list[int]:
    ks = list(ks)
    if (not ks and not allow_empty) or not all(
        isinstance(k, (int, np.integer)) and k >= 1 for k in ks
    ):
        raise ValueError(f"{name} must be positive integers, got {ks!r}")
    return sorted({int(k) for k in ks})


def retrieval_metrics(
    ranking: Ranking,
    *,
    ks: Iterable[int] = (1, 5, 10),
    precision_ks: Iterable[int] = (10,),
    map_at_k: int = 5,
    weights: Mapping[int, float] | None = None,
    skip_queries_without_positives: bool = True,
) -> RetrievalMetrics:
    """Exact retrieval metrics of the labelled queries of ``ranking``.

    Metrics (definitions in :mod:`lookalike.metrics.ranking`):

    - ``recall@k`` for each ``k`` in ``ks``: a relevant item in the top k (Song et al. 2016);
    - ``precision@k`` for each ``k`` in ``precision_ks``;
    - ``map``: average precision over the full ranking (pml ``mean_average_precision``, k=None);
    - ``map@{map_at_k}``: Kaggle's MAP@K, ``/ min(R, K)``;
    - ``map@r``: MAP@R (Musgrave et al., ECCV 2020);
    - ``weighted_topk``: ``sum_k weights[k] * recall@k`` (600/300/100 at 1/5/10 by default);
    - ``n_queries``, ``n_queries_without_positives``: counts of labelled queries, not metrics.

    Unlabelled queries have no ground truth and are left out. Queries whose label has no other
    item in the gallery are left out of every average by default, as pml's ``AccuracyCalculator``
    does; with ``skip_queries_without_positives=False`` they count as 0.

    Returns:
        The summary and the per-query values, both over the labelled queries in ranking order.
    """
    recall_ks = _check_ks(ks, "ks", allow_empty=False)
    precision_ks = _check_ks(precision_ks, "precision_ks", allow_empty=True)
    weights = dict(DEFAULT_TOPK_WEIGHTS if weights is None else weights)
    _check_ks(weights, "weights' keys", allow_empty=True)
    map_k = _check_ks([map_at_k], "map_at_k", allow_empty=False)[0]
    labelled = np.flatnonzero(ranking.codes.labelled_queries)
    if len(labelled) < ranking.num_queries:
        ranking = ranking.select(labelled)
    values, num_relevant, first_rank = _metrics_from_ranks(
        ranking.positive_query, ranking.positive_rank, ranking.num_queries,
        sorted({*recall_ks, *weights}), precision_ks, map_k, weights,
    )
    num_queries = ranking.num_queries
    evaluated = num_relevant > 0 if skip_queries_without_positives else np.ones(num_queries, bool)
    if not evaluated.any():
        logger.warning("no query has a relevant item in the gallery; every metric is NaN")
    summary_keys = [f"recall@{k}" for k in recall_ks] + [f"precision@{k}" for k in precision_ks]
    summary_keys += ["map", f"map@{map_k}", "map@r", "weighted_topk"]
    summary: dict[str, float] = {
        key: float(values[key][evaluated].mean()) if evaluated.any() else float("nan")
        for key in summary_keys
    }
    summary["n_queries"] = num_queries
    summary["n_queries_without_positives"] = int((num_relevant == 0).sum())
    per_query = PerQueryMetrics(
        values={key: values[key] for key in [*summary_keys, "r_precision"]},
        num_relevant=num_relevant,
        first_positive_rank=first_rank,
        evaluated=evaluated,
        neighbours=ranking.neighbours,
    )
    return RetrievalMetrics(summary, per_query)


def metrics_depth(
    ks: Iterable[int] = (1, 5, 10),
    precision_ks: Iterable[int] = (10,),
    map_at_k: int = 5,
    weights: Mapping[int, float] | None = None,
) -> int:
    """The neighbours per query a ranking must keep for these metrics' per-query lists."""
    weights = DEFAULT_TOPK_WEIGHTS if weights is None else weights
    return max([*ks, *precision_ks, map_at_k, *weights])


def evaluate_retrieval(
    query_embeddings: np.ndarray,
    query_labels: Iterable[Hashable],
    gallery_embeddings: np.ndarray,
    gallery_labels: Iterable[Hashable],
    *,
    metric: str = "cosine",
    ks: Iterable[int] = (1, 5, 10),
    self_index: np.ndarray | None = None,
    precision_ks: Iterable[int] = (10,),
    map_at_k: int = 5,
    weights: Mapping[int, float] | None = None,
    chunk_size: int | None = None,
    device: str | torch.device = "cpu",
    junk: Sequence[Sequence[int]] | None = None,
    skip_queries_without_positives: bool = True,
    progress: Callable[[int], None] | None = None,
) -> dict[str, float]:
    """Rank labelled queries against a labelled gallery and score the ranking in one call.

    :func:`lookalike.ranking.rank` (exact, chunked; the query's own image ``self_index`` and its
    junk items removed) followed by :func:`retrieval_metrics`. Every label must be given.

    Args:
        query_embeddings: ``(Q, D)``.
        query_labels: ``Q`` hashable labels (strings, ints, ...).
        gallery_embeddings: ``(N, D)``.
        gallery_labels: ``N`` hashable labels.
        metric: "cosine", "ip", "l2" or "l1".
        ks: Cut-offs for recall@k.
        self_index: ``(Q,)`` gallery row of each query's own image, -1 where it has none.
        precision_ks: Cut-offs for precision@k (may be empty).
        map_at_k: The K of Kaggle's MAP@K.
        weights: ``{k: weight}`` of ``weighted_topk``; 600/300/100 at 1/5/10 when None.
        chunk_size: Queries scored at once; memory grows as ``chunk_size * N``.
        device: Torch device for scoring and sorting.
        junk: For each query, gallery rows that are neither relevant nor irrelevant.
        skip_queries_without_positives: Leave queries without relevant items out of averages.
        progress: Called with the number of queries scored after each chunk.

    Returns:
        The summary ``{name: value}`` of :func:`retrieval_metrics`; rank with
        :func:`lookalike.ranking.rank` and call :func:`retrieval_metrics` for per-query values.
    """
    ks, precision_ks = list(ks), list(precision_ks)
    recall_ks = _check_ks(ks, "ks", allow_empty=False)
    checked_precision = _check_ks(precision_ks, "precision_ks", allow_empty=True)
    map_k = _check_ks([map_at_k], "map_at_k", allow_empty=False)[0]
    ranking = rank(
        query_embeddings,
        gallery_embeddings,
        query_labels,
        gallery_labels,
        metric=metric,
        k=metrics_depth(recall_ks, checked_precision, map_k, weights),
        exclude_rows=self_index,
        junk=junk,
        allow_unlabelled=False,
        chunk_size=chunk_size,
        device=device,
        progress=progress,
    )
    return retrieval_metrics(
        ranking,
        ks=recall_ks,
        precision_ks=checked_precision,
        map_at_k=map_k,
        weights=weights,
        skip_queries_without_positives=skip_queries_without_positives,
    ).summary
