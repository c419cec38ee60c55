"""Rank, then score with per-query values: the library's two steps, for the metric tests."""

from __future__ import annotations

from typing import Any

import numpy as np

from lookalike.metrics.retrieval import PerQueryMetrics, metrics_depth, retrieval_metrics
from lookalike.ranking import rank


def with_per_query(
    query_embeddings: np.ndarray,
    query_labels: Any,
    gallery_embeddings: np.ndarray,
    gallery_labels: Any,
    *,
    self_index: np.ndarray | None = None,
    junk: Any = None,
    chunk_size: int = 1024,
    device: str = "cpu",
    metric: str = "cosine",
    **metric_options: Any,
) -> tuple[dict[str, float], PerQueryMetrics]:
    """:func:`evaluate_retrieval`'s arguments; returns the summary and the per-query values."""
    depth = metrics_depth(
        metric_options.get("ks", (1, 5, 10)),
        metric_options.get("precision_ks", (10,)),
        metric_options.get("map_at_k", 5),
        metric_options.get("weights"),
    )
    ranking = rank(
        query_embeddings, gallery_embeddings, query_labels, gallery_labels, metric=metric,
        k=depth, exclude_rows=self_index, junk=junk, allow_unlabelled=False,
        chunk_size=chunk_size, device=device,
    )
    scored = retrieval_metrics(ranking, **metric_options)
    return scored.summary, scored.per_query
