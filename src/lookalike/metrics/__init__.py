"""Retrieval metrics: Recall@K, Precision@K, mAP, Kaggle MAP@K, MAP@R, weighted top-k.

:mod:`~lookalike.metrics.ranking` holds pure functions of a ranking's relevance flags;
:func:`retrieval_metrics` computes them all, exactly, from a :class:`lookalike.ranking.Ranking`;
:func:`evaluate_retrieval` ranks embeddings and scores them in one call.
"""

from lookalike.metrics.ranking import (
    DEFAULT_TOPK_WEIGHTS,
    average_precision_from_ranks,
    map_at_k,
    map_at_r,
    precision_at_k,
    r_precision,
    recall_at_k,
    remove_junk,
    weighted_topk,
)
from lookalike.metrics.retrieval import (
    PerQueryMetrics,
    RetrievalMetrics,
    evaluate_retrieval,
    metrics_depth,
    relevance_from_labels,
    retrieval_metrics,
)

__all__ = [
    "DEFAULT_TOPK_WEIGHTS",
    "PerQueryMetrics",
    "RetrievalMetrics",
    "average_precision_from_ranks",
    "evaluate_retrieval",
    "map_at_k",
    "map_at_r",
    "metrics_depth",
    "precision_at_k",
    "r_precision",
    "recall_at_k",
    "relevance_from_labels",
    "remove_junk",
    "retrieval_metrics",
    "weighted_topk",
]
