"""The reference the pipeline and training tests hold reported metrics to: retrieval metrics
straight from their paper definitions, one query and one gallery item at a time.

Nothing here comes from :mod:`lookalike`: cosine scores are computed pair by pair in float64, each
query's gallery is fully sorted (stable, so among equal scores the lower gallery row ranks
first), the query's own image is dropped from its ranking when the gallery holds it (same id),
and every metric is read off the list of relevance flags that remains:

- Recall@K (Song et al., CVPR 2016): 1 if a relevant item is among the first K;
- Precision@K: relevant items among the first K, divided by K;
- AP (mean over queries: mAP): ``(1/R) sum_{hits} P(rank)`` over the whole ranking;
- MAP@K (Kaggle): ``sum_{hits, rank <= K} P(rank) / min(R, K)``;
- MAP@R (Musgrave, Belongie, Lim, ECCV 2020): ``(1/R) sum_{hits, rank <= R} P(rank)``;
- weighted top-k: ``sum_k weight_k * Recall@k``;

where ``R`` is the number of relevant gallery items (own image excluded) and ``P(rank)`` the
precision of the first ``rank`` items. Queries with ``R == 0`` are left out of every average
(pytorch-metric-learning's ``AccuracyCalculator``); unlabelled gallery items (label ``None``) are
never relevant; unlabelled queries are skipped.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence

import numpy as np

DEFAULT_WEIGHTS = {1: 600.0, 5: 300.0, 10: 100.0}


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two vectors, in float64."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return float(np.dot(a, b) / (math.sqrt(np.dot(a, a)) * math.sqrt(np.dot(b, b))))


def naive_ranking(
    query: np.ndarray, gallery: np.ndarray, own_row: int | None = None
) -> list[int]:
    """Gallery rows by descending cosine to ``query`` (ties: lower row first), minus ``own_row``."""
    scores = np.array([cosine(query, item) for item in gallery], dtype=np.float64)
    order = np.argsort(-scores, kind="stable")
    return [int(row) for row in order if row != own_row]


def naive_query_metrics(
    relevant: Sequence[bool],
    *,
    ks: Sequence[int],
    precision_ks: Sequence[int],
    map_at_k: int,
    weights: Mapping[int, float],
) -> dict[str, float]:
    """Every metric of one query from its ranking's relevance flags (best first); needs R > 0."""
    num_relevant = sum(bool(flag) for flag in relevant)
    assert num_relevant > 0
    precision_at_hit: list[tuple[int, float]] = []  # (rank, precision of the first rank items)
    hits = 0
    for rank, flag in enumerate(relevant, start=1):
        if flag:
            hits += 1
            precision_at_hit.append((rank, hits / rank))

    def recall(k: int) -> float:
        return 1.0 if any(relevant[:k]) else 0.0

    values = {f"recall@{k}": recall(k) for k in ks}
    for k in precision_ks:
        values[f"precision@{k}"] = sum(bool(flag) for flag in relevant[:k]) / k
    values["map"] = sum(p for _, p in precision_at_hit) / num_relevant
    values[f"map@{map_at_k}"] = sum(p for rank, p in precision_at_hit if rank <= map_at_k) / min(
        num_relevant, map_at_k
    )
    values["map@r"] = sum(p for rank, p in precision_at_hit if rank <= num_relevant) / num_relevant
    values["weighted_topk"] = sum(weight * recall(k) for k, weight in weights.items())
    return values


def naive_retrieval_metrics(
    query_embeddings: np.ndarray,
    query_labels: Sequence[Hashable | None],
    gallery_embeddings: np.ndarray,
    gallery_labels: Sequence[Hashable | None],
    *,
    query_ids: Sequence[str] | None = None,
    gallery_ids: Sequence[str] | None = None,
    ks: Sequence[int] = (1, 5, 10),
    precision_ks: Sequence[int] = (10,),
    map_at_k: int = 5,
    weights: Mapping[int, float] | None = None,
) -> dict[str, float]:
    """Mean metrics over the labelled queries that have a relevant item, plus query counts.

    With ``query_ids`` and ``gallery_ids``, a query's own gallery row (the row with its id) is
    dropped from its ranking and not counted as relevant.

    Returns:
        ``{"recall@k", "precision@k", "map", "map@K", "map@r", "weighted_topk": mean,
        "n_queries": labelled queries, "n_queries_without_positives": those with R == 0}``.
    """
    weights = dict(DEFAULT_WEIGHTS if weights is None else weights)
    assert (query_ids is None) == (gallery_ids is None)
    per_query: list[dict[str, float]] = []
    n_queries = without_positives = 0
    for q, (query, label) in enumerate(zip(query_embeddings, query_labels, strict=True)):
        if label is None:
            continue
        n_queries += 1
        own_row = None
        if query_ids is not None:
            own = [row for row, gallery_id in enumerate(gallery_ids) if gallery_id == query_ids[q]]
            assert len(own) <= 1, f"gallery repeats id {query_ids[q]!r}"
            own_row = own[0] if own else None
        ranking = naive_ranking(query, gallery_embeddings, own_row)
        relevant = [
            gallery_labels[row] is not None and gallery_labels[row] == label for row in ranking
        ]
        if not any(relevant):
            without_positives += 1
            continue
        per_query.append(
            naive_query_metrics(
                relevant, ks=ks, precision_ks=precision_ks, map_at_k=map_at_k, weights=weights
            )
        )
    assert per_query, "no query has a relevant item"
    summary = {key: sum(v[key] for v in per_query) / len(per_query) for key in per_query[0]}
    summary["n_queries"] = n_queries
    summary["n_queries_without_positives"] = without_positives
    return summary


def kaggle_apk(actual: set | list, predicted: list, k: int = 10) -> float:
    """Kaggle's ``apk`` (ml_metrics), verbatim in behaviour: precision at each new hit in the
    first ``k`` predictions, summed and divided by ``min(len(actual), k)``."""
    if len(predicted) > k:
        predicted = predicted[:k]
    score = 0.0
    num_hits = 0.0
    for i, p in enumerate(predicted):
        if p in actual and p not in predicted[:i]:
            num_hits += 1.0
            score += num_hits / (i + 1.0)
    if not actual:
        return 0.0
    return score / min(len(actual), k)
