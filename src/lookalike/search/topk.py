"""Top-k search of query embeddings against a gallery, batched, with optional self-exclusion.

When the gallery contains the queries (the Stanford Online Products protocol of Oh Song et al.,
"Deep Metric Learning via Lifted Structured Feature Embedding", CVPR 2016), each query's own row
would trivially rank first. :func:`search` with ``exclude_rows`` searches one extra neighbour and
drops each query's own row; every caller that excludes rows goes through it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from lookalike.embed.store import EmbeddingSet
from lookalike.index.base import Index, create_index
from lookalike.index.result import SearchResult

DEFAULT_BATCH_SIZE = 4096


def search(
    index: Index,
    query_embeddings: np.ndarray,
    k: int,
    exclude_rows: np.ndarray | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: Callable[[int], None] | None = None,
) -> SearchResult:
    """The ``k`` best gallery rows for each query, searching ``batch_size`` queries at a time.

    ``k`` is clamped to the index size. With ``exclude_rows`` the index is searched
    ``min(k + 1, ntotal)`` deep and each query's excluded row is dropped, so a query that is a
    gallery image gets ``k`` other neighbours.

    Args:
        index: A built index holding the gallery.
        query_embeddings: ``(Q, D)`` float32 query rows.
        k: Neighbours per query, at least 1.
        exclude_rows: ``(Q,)`` gallery row to drop from each query's ranking, -1 for none (see
            :func:`self_exclusion`); None drops nothing.
        batch_size: Queries per call to ``index.search``.
        progress: Called after each batch with the number of queries it held (an increment, as
            ``rich.progress.Progress.advance`` expects).

    Returns:
        ``(Q, min(k, ntotal))`` :class:`SearchResult`, best first, padded with index -1 and the
        metric's worst score where a query has fewer neighbours (its own row was dropped).

    Raises:
        ValueError: ``k`` or ``batch_size`` is below 1, the queries are not ``(Q, D)``, or
            ``exclude_rows`` does not hold one entry per query, each a gallery row or -1.
    """
    if int(k) < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    queries = np.asarray(query_embeddings)
    if queries.ndim != 2:
        raise ValueError(f"query embeddings must be (Q, D), got shape {queries.shape}")
    if exclude_rows is not None:
        exclude_rows = np.asarray(exclude_rows, dtype=np.int64).reshape(-1)
        if exclude_rows.shape[0] != queries.shape[0]:
            raise ValueError(
                f"exclude_rows has {exclude_rows.shape[0]} entries but there are "
                f"{queries.shape[0]} queries"
            )
        # A row outside the gallery would exclude nothing: the query would find itself.
        outside = np.flatnonzero((exclude_rows < -1) | (exclude_rows >= index.ntotal))
        if index.ntotal and outside.size:
            first = int(outside[0])
            raise ValueError(
                f"exclude_rows[{first}] = {int(exclude_rows[first])} is no gallery row; each "
                f"entry must lie in [0, {index.ntotal}) or -1 (see self_exclusion)"
            )
    if index.ntotal:  # an empty index is refused by index.search itself
        k = min(int(k), index.ntotal)
    depth = k + 1 if exclude_rows is not None and k < index.ntotal else k
    if queries.shape[0] == 0:
        return index.search(queries, k)
    parts = []
    for start in range(0, queries.shape[0], batch_size):
        batch = queries[start : start + batch_size]
        parts.append(index.search(batch, depth))
        if progress is not None:
            progress(batch.shape[0])
    result = SearchResult(
        np.concatenate([part.scores for part in parts]),
        np.concatenate([part.indices for part in parts]),
        index.metric.higher_is_better,
    )
    return result if exclude_rows is None else drop_rows(result, exclude_rows, k)


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
        k: Columns to keep; where nothing was dropped the last of ``k'`` columns falls off, and
            where a dropped row would still be among them it becomes padding (index -1, the
            worst score), as when ``k' = k`` because the gallery holds only ``k`` rows.
    """
    exclude = np.asarray(exclude, dtype=np.int64).reshape(-1, 1)
    if exclude.shape[0] != len(result):
        raise ValueError(
            f"exclude has {exclude.shape[0]} entries but there are {len(result)} queries"
        )
    dropped = (result.indices == exclude) & (exclude >= 0)
    # A stable sort on the boolean mask moves dropped entries last and keeps the rest in order.
    order = np.argsort(dropped, axis=1, kind="stable")[:, :k]
    padding = np.take_along_axis(dropped, order, axis=1)
    worst = np.float32(-np.inf if result.higher_is_better else np.inf)
    return SearchResult(
        np.where(padding, worst, np.take_along_axis(result.scores, order, axis=1)),
        np.where(padding, -1, np.take_along_axis(result.indices, order, axis=1)),
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
        ``(Q, min(k, len(gallery)))`` :class:`SearchResult` into ``gallery``'s rows.

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
    exclude_rows = self_exclusion(query.ids, gallery.ids) if exclude_self else None
    return search(index, query.embeddings, k, exclude_rows, batch_size, progress)
