"""Retrieval metrics: Recall@K, Precision@K, mAP, Kaggle MAP@K, MAP@R, weighted top-k.

:mod:`~lookalike.metrics.ranking` holds pure functions of a ranking's relevance flags;
:func:`evaluate_retrieval` computes them all, exactly and chunk by chunk, from embeddings.
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
    encode_labels,
    evaluate_retrieval,
    relevance_from_labels,
)

__all__ = [
    "DEFAULT_TOPK_WEIGHTS",
    "PerQueryMetrics",
    "average_precision_from_ranks",
    "encode_labels",
    "evaluate_retrieval",
    "map_at_k",
    "map_at_r",
    "precision_at_k",
    "r_precision",
    "recall_at_k",
    "relevance_from_labels",
    "remove_junk",
    "weighted_topk",
]
