"""Top-k search of query embeddings against a gallery, batched, with optional self-exclusion.

When the gallery contains the queries (the Stanford Online Products protocol of Oh Song et al.,
"Deep Metric Learning via Lifted Structured Feature Embedding", CVPR 2016), each query's own row
would trivially rank first; ``exclude_self`` searches one extra neighbour and drops it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from lookalike.embed.store import EmbeddingSet
from lookalike.index.base import Index, create_index
from lookalike.search.result import SearchResult

DEFAULT_BATCH_SIZE = 4096


def search(
    index: Index,
    query_embeddings: np.ndarray,
    k: int,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: Callable[[int], None] | None = None,
) -> SearchResult:
    """The ``k`` best gallery rows for each query, searching ``batch_size`` queries at a time.

    Args:
        index: A built index holding the gallery.
        query_embeddings: ``(Q, D)`` float32 query rows.
        k: Neighbours per query.
        batch_size: Queries per call to ``index.search``.
        progress: Called after each batch with the number of queries it held (an increment, as
            ``rich.progress.Progress.advance`` expects).

    Returns:
        ``(Q, k)`` :class:`SearchResult`, best first, padded with -1 where the index is short.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    queries = np.asarray(query_embeddings)
    if queries.ndim != 2:
        raise ValueError(f"query embeddings must be (Q, D), got shape {queries.shape}")
    if queries.shape[0] == 0:
        return index.search(queries, k)
    parts = []
    for start in range(0, queries.shape[0], batch_size):
        batch = queries[start : start + batch_size]
        parts.append(index.search(batch, k))
        if progress is not None:
            progress(batch.shape[0])
    return SearchResult(
        np.concatenate([part.scores for part in parts]),
        np.concatenate([part.indices for part in parts]),
        index.metric.higher_is_better,
    )


def self_exclusion(query_ids: Sequence[str], gallery_ids: Sequence[str]) -> np.ndarray:
    """``(Q,)`` gallery row holding each query's own id, -1 where the gallery lacks it.

    Raises:
        ValueError: The gallery repeats an id (so "own row" is ambiguous).
    """
    rows: dict[str, int] = {}
    for row, gallery_id in enumerate(gallery_ids):
        if gallery_id in rows:
            raise ValueError(
                f"gallery id {gallery_id!r} appears more than once; ids must be unique to exclude "
                "each query's own row"
            )
        rows[gallery_id] = row
    return np.array([rows.get(query_id, -1) for query_id in query_ids], dtype=np.int64)


def drop_rows(result: SearchResult, exclude: np.ndarray, k: int) -> SearchResult:
    """Remove ``exclude[q]`` from query ``q``'s ranking, keeping order, then keep ``k`` columns.

    Args:
        result: ``(Q, k')`` ranking, typically searched with ``k' = k + 1``.
        exclude: ``(Q,)`` gallery row to drop per query, -1 for none.
        k: Columns to keep; where nothing was dropped the last of ``k'`` columns falls off.
    """
    exclude = np.asarray(exclude, dtype=np.int64).reshape(-1, 1)
    if exclude.shape[0] != len(result):
        raise ValueError(
            f"exclude has {exclude.shape[0]} entries but there are {len(result)} queries"
        )
    dropped = (result.indices == exclude) & (exclude >= 0)
    # A stable sort on the boolean mask moves dropped entries last and keeps the rest in order.
    order = np.argsort(dropped, axis=1, kind="stable")[:, :k]
    return SearchResult(
        np.take_along_axis(result.scores, order, axis=1),
        np.take_along_axis(result.indices, order, axis=1),
        result.higher_is_better,
    )


def search_embeddings(
    query: EmbeddingSet,
    gallery: EmbeddingSet,
    k: int,
    index_kind: str = "flat",
    metric: str = "cosine",
    exclude_self: bool = False,
    device: str = "cpu",
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: Callable[[int], None] | None = None,
    **params: Any,
) -> SearchResult:
    """Build an index over ``gallery`` and search it with ``query``.

    Args:
        query: Query embeddings with ids.
        gallery: Gallery embeddings with ids; its row numbers are the result's indices.
        k: Neighbours per query.
        index_kind: Registry name of the index ("flat", "exact_torch", "hnsw", ...).
        metric: "cosine", "ip", "l2" or "l1".
        exclude_self: Drop from each query's ranking the gallery row with the query's own id.
        device: "cpu" or "cuda[:N]".
        batch_size: Queries per index call.
        progress: Called with the number of queries done after each batch.
        **params: Index parameters (``nlist``, ``M``, ...).

    Returns:
        ``(Q, k)`` :class:`SearchResult` into ``gallery``'s rows.

    Raises:
        ValueError: The two sets come from different models (fingerprints differ).
    """
    if query.fingerprint and gallery.fingerprint and query.fingerprint != gallery.fingerprint:
        raise ValueError(
            f"query embeddings come from model {query.fingerprint} but gallery embeddings from "
            f"{gallery.fingerprint}; embed both with the same model"
        )
    if query.dim != gallery.dim:
        raise ValueError(
            f"query embeddings have dimension {query.dim} but gallery embeddings {gallery.dim}; "
            "embed both with the same model"
        )
    index = create_index(index_kind, gallery.dim, metric, device=device, **params)
    index.add(gallery.embeddings)
    if not exclude_self:
        return search(index, query.embeddings, k, batch_size, progress)
    exclude = self_exclusion(query.ids, gallery.ids)
    result = search(index, query.embeddings, k + 1, batch_size, progress)
    return drop_rows(result, exclude, k)
