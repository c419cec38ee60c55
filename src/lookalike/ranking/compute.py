"""Exact, memory-bounded ranking of a gallery for every query: the one ranking function.

Queries are scored in chunks of ``chunk_size`` rows: from each chunk's ``(chunk, N)`` score
matrix the ranks of the relevant gallery items are found (:mod:`lookalike.ranking.gallery_ranks`)
together with the top-k neighbours. No ``(Q, N)`` matrix is ever held, so a 60k x 60k ranking
(SOP) holds about ``CHUNK_BYTES_PER_SCORE * chunk_size * N`` bytes besides the embeddings; by
default the chunk is sized so that this stays under :data:`DEFAULT_CHUNK_BYTES`. Rows that are
already what the metric needs (float32, C-contiguous, unit length for cosine) are used in place,
and a gallery that is the query set is prepared once: ranking and scoring 8,192 queries against
a 60,502 x 512 gallery peaked at 1.7x the embeddings (raw FAISS top-k search of the same rows:
2.2x; ``benchmarks/scale.py``).

The query's own row (``exclude_rows``, the Stanford Online Products protocol of Oh Song et al.,
CVPR 2016) and "junk" items are removed from the ranking before anything is counted (cirtorch's
``compute_map``; pml's ``ref_includes_query``). Ties are broken deterministically by a stable
sort: among equal scores the lower gallery row ranks first.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable, Iterable, Sequence

import numpy as np
import torch

from lookalike.index.metrics import Metric, get_metric
from lookalike.index.result import SearchResult
from lookalike.ranking.gallery_ranks import rank_chunk
from lookalike.ranking.labels import encode_labels
from lookalike.ranking.ranking import Ranking
from lookalike.utils.devices import check_device
from lookalike.utils.memory import release_free_memory

logger = logging.getLogger(__name__)

DEFAULT_CHUNK_SIZE = 1024
"""Most queries scored at once."""
DEFAULT_CHUNK_BYTES = 64 * 2**20
"""Working memory a chunk may take by default (the chunk shrinks below 1024 rows for big N)."""
CHUNK_BYTES_PER_SCORE = 24
"""Bytes held per (query, gallery item) of a chunk: the scores, their sort keys, the sorted
keys, NumPy's sort buffer and the boolean masks (measured at 60,502 items)."""
UNIT_NORM_TOLERANCE = 1e-5
_CHECK_BLOCK = 8192


def chunk_rows(num_gallery: int, budget: int = DEFAULT_CHUNK_BYTES) -> int:
    """Queries per chunk so that a chunk's working memory stays within ``budget`` bytes (at
    least 16 queries, at most :data:`DEFAULT_CHUNK_SIZE`)."""
    fitting = budget // (CHUNK_BYTES_PER_SCORE * max(num_gallery, 1))
    return int(min(DEFAULT_CHUNK_SIZE, max(16, fitting)))


def _prepare(embeddings: np.ndarray, name: str, metric: Metric) -> np.ndarray:
    """The rows ``metric`` scores; ``embeddings`` itself (no copy) when they already are."""
    array = np.asarray(embeddings)
    if array.ndim != 2 or array.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty (rows, D) array, got shape {array.shape}")
    ready = array.dtype == np.float32 and array.flags.c_contiguous
    for start in range(0, len(array), _CHECK_BLOCK):  # block by block: no (N, D) temporaries
        block = array[start : start + _CHECK_BLOCK]
        if not np.isfinite(block).all():
            raise ValueError(f"{name} holds NaN or infinite values; fix the embeddings first")
        if ready and metric.normalize:
            norms = np.sqrt(np.einsum("ij,ij->i", block, block, dtype=np.float64))
            ready = bool(np.all(np.abs(norms - 1.0) <= UNIT_NORM_TOLERANCE))
    return array if ready else metric.prepare(array)


def _check_rows(rows: np.ndarray, num_queries: int, num_gallery: int) -> np.ndarray:
    rows = np.asarray(rows, dtype=np.int64)
    if rows.shape != (num_queries,):
        raise ValueError(f"exclude_rows must have shape ({num_queries},), got {rows.shape}")
    if num_queries and (rows.min() < -1 or rows.max() >= num_gallery):
        raise ValueError(f"exclude_rows must hold gallery rows in [0, {num_gallery}) or -1")
    return rows


def _excluded_keys(
    exclude_rows: np.ndarray | None,
    junk: Sequence[Sequence[int]] | None,
    num_queries: int,
    num_gallery: int,
) -> np.ndarray:
    """Sorted unique ``query * N + gallery_row`` of every (query, item) pair left out."""
    keys = [np.zeros(0, dtype=np.int64)]
    if exclude_rows is not None:
        queries = np.flatnonzero(exclude_rows >= 0)
        keys.append(queries * num_gallery + exclude_rows[queries])
    if junk is not None:
        if len(junk) != num_queries:
            raise ValueError(f"junk must hold one list of gallery rows per query ({num_queries})")
        for query, rows in enumerate(junk):
            rows = np.asarray(rows, dtype=np.int64).ravel()
            if rows.size and (rows.min() < 0 or rows.max() >= num_gallery):
                raise ValueError(f"junk[{query}] must hold gallery rows in [0, {num_gallery})")
            keys.append(query * num_gallery + rows)
    return np.unique(np.concatenate(keys))


def rank(
    query_embeddings: np.ndarray,
    gallery_embeddings: np.ndarray,
    query_labels: Iterable[Hashable | None] | None = None,
    gallery_labels: Iterable[Hashable | None] | None = None,
    *,
    metric: str = "cosine",
    k: int = 10,
    exclude_rows: np.ndarray | None = None,
    junk: Sequence[Sequence[int]] | None = None,
    allow_unlabelled: bool = True,
    chunk_size: int | None = None,
    device: str | torch.device = "cpu",
    progress: Callable[[int], None] | None = None,
) -> Ranking:
    """Rank the gallery for every query, exactly, and keep what everything downstream reads.

    Args:
        query_embeddings: ``(Q, D)``.
        gallery_embeddings: ``(N, D)``.
        query_labels: ``Q`` hashable labels (None: no ground truth); all None when omitted.
        gallery_labels: ``N`` labels (None: a distractor); all None when omitted.
        metric: A name for :func:`lookalike.index.metrics.get_metric` (cosine, ip, l2, l1).
        k: Neighbours kept per query (padded with -1 where fewer remain).
        exclude_rows: ``(Q,)`` gallery row of each query's own image, -1 where it has none; pass
            ``np.arange(Q)`` when the queries are the first rows of the gallery.
        junk: For each query, gallery rows that are neither relevant nor ranked.
        allow_unlabelled: When False a None label is an error (strict metric evaluation).
        chunk_size: Queries scored at once; memory grows as ``chunk_size * N``. None: as many
            as fit in :data:`DEFAULT_CHUNK_BYTES` (:func:`chunk_rows`).
        device: Torch device for scoring and sorting.
        progress: Called with the number of queries done after each chunk (an increment).

    Returns:
        The :class:`Ranking`.
    """
    resolved = get_metric(metric)
    queries = _prepare(query_embeddings, "query_embeddings", resolved)
    gallery = (
        queries
        if gallery_embeddings is query_embeddings
        else _prepare(gallery_embeddings, "gallery_embeddings", resolved)
    )
    if queries.shape[1] != gallery.shape[1]:
        raise ValueError(
            f"query_embeddings have D={queries.shape[1]} "
            f"but gallery_embeddings have D={gallery.shape[1]}"
        )
    num_queries, num_gallery = len(queries), len(gallery)
    codes = encode_labels(
        [None] * num_queries if query_labels is None else query_labels,
        [None] * num_gallery if gallery_labels is None else gallery_labels,
        allow_unlabelled=allow_unlabelled,
    )
    if len(codes.query) != num_queries or len(codes.gallery) != num_gallery:
        raise ValueError(
            f"got {len(codes.query)} query labels for {num_queries} query embeddings and "
            f"{len(codes.gallery)} gallery labels for {num_gallery} gallery embeddings"
        )
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if chunk_size is None:
        chunk_size = chunk_rows(num_gallery)
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    if exclude_rows is not None:
        exclude_rows = _check_rows(exclude_rows, num_queries, num_gallery)
    excluded_keys = _excluded_keys(exclude_rows, junk, num_queries, num_gallery)

    device = torch.device(check_device(device, allow_auto=False))
    gallery_tensor = torch.from_numpy(gallery).to(device)
    gallery_codes = torch.from_numpy(codes.gallery).to(device)
    logger.info(
        "ranking %d queries against %d gallery items (%s) in chunks of %d",
        num_queries, num_gallery, resolved.name, chunk_size,
    )
    all_rows, all_ranks, all_indices, all_scores = [], [], [], []
    for start in range(0, num_queries, chunk_size):
        stop = min(start + chunk_size, num_queries)
        scores = resolved.pairwise(torch.from_numpy(queries[start:stop]).to(device), gallery_tensor)
        chunk_codes = torch.from_numpy(codes.query[start:stop]).to(device)
        excluded = torch.zeros(scores.shape, dtype=torch.bool, device=device)
        lo, hi = np.searchsorted(excluded_keys, [start * num_gallery, stop * num_gallery])
        chunk_keys = torch.from_numpy(excluded_keys[lo:hi] - start * num_gallery)
        excluded.view(-1)[chunk_keys.to(device)] = True
        # Unlabelled codes (-1 query, -2 gallery) never equal any other code.
        relevant = (chunk_codes[:, None] == gallery_codes[None, :]) & ~excluded
        rows, ranks, indices, top_scores = rank_chunk(scores, relevant, excluded, resolved, int(k))
        all_rows.append(rows.cpu().numpy() + start)
        all_ranks.append(ranks.cpu().numpy())
        all_indices.append(indices.cpu().numpy())
        all_scores.append(top_scores.cpu().numpy())
        del scores, excluded, relevant
        release_free_memory()  # else the heap creeps up chunk by chunk (utils/memory.py)
        if progress is not None:
            progress(stop - start)
    indices = np.concatenate(all_indices)
    top_scores = np.concatenate(all_scores)
    if indices.shape[1] < k:
        padding = int(k) - indices.shape[1]
        indices = np.pad(indices, ((0, 0), (0, padding)), constant_values=-1)
        top_scores = np.pad(top_scores, ((0, 0), (0, padding)), constant_values=resolved.worst())
    return Ranking(
        SearchResult(top_scores, indices, resolved.higher_is_better),
        codes,
        np.concatenate(all_rows).astype(np.int64),
        np.concatenate(all_ranks).astype(np.int64),
        resolved.name,
        exclude_rows,
    )
