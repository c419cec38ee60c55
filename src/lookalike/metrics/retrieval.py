"""Exact, memory-bounded retrieval evaluation of query embeddings against a gallery.

Queries are scored in chunks of ``chunk_size`` rows: from each chunk's ``(chunk, N)`` score matrix
the ranks of the relevant gallery items are found (:mod:`lookalike.metrics.gallery_ranks`), and
every metric follows from those ranks. No ``(Q, N)`` matrix is ever held, so a 60k x 60k evaluation
(SOP) needs about ``12 * chunk_size * N`` bytes besides the embeddings (0.7 GB at the default).

Relevance is label equality. The query's own image (``self_index``) and "junk" items are removed
from the ranking before scoring (cirtorch's ``compute_map``; pml's ``ref_includes_query``). Ties
are broken deterministically by a stable sort: among equal scores the lower gallery row ranks first.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from rich.progress import track

from lookalike.index.metrics import Metric, get_metric
from lookalike.metrics.gallery_ranks import rank_chunk
from lookalike.metrics.ranking import DEFAULT_TOPK_WEIGHTS, remove_junk
from lookalike.search.result import SearchResult

logger = logging.getLogger(__name__)


@dataclass
class PerQueryMetrics:
    """Per-query results of :func:`evaluate_retrieval`, for reports and error analysis.

    Attributes:
        values: ``(Q,)`` float64 per metric, under the keys of the summary (``recall@1``, ``map``,
            ``weighted_topk``, ...) plus ``r_precision``. The summary value is the mean over the
            ``evaluated`` rows.
        num_relevant: ``(Q,)`` int64 relevant gallery items per query (self and junk excluded).
        first_positive_rank: ``(Q,)`` int64 1-based rank of the first relevant item, 0 if none.
        evaluated: ``(Q,)`` bool, the queries counted in the summary.
        neighbours: The top ``max(ks, precision_ks, map_at_k, weights)`` gallery rows of each
            query, self and junk removed, padded with -1.
    """

    values: dict[str, np.ndarray]
    num_relevant: np.ndarray
    first_positive_rank: np.ndarray
    evaluated: np.ndarray
    neighbours: SearchResult


def _as_label_list(labels: Iterable[Hashable] | np.ndarray | torch.Tensor, name: str) -> list:
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    if isinstance(labels, np.ndarray) and labels.ndim != 1:
        raise ValueError(f"{name} must be one label per row, got an array of shape {labels.shape}")
    return list(labels)


def encode_labels(
    query_labels: Iterable[Hashable], gallery_labels: Iterable[Hashable]
) -> tuple[np.ndarray, np.ndarray]:
    """Map arbitrary hashable labels (strings, ints, tuples) to shared int64 codes.

    Returns:
        ``(Q,)`` and ``(N,)`` int64 codes; equal labels get equal codes.
    """
    codes: dict[Hashable, int] = {}

    def encode(labels: Iterable[Hashable], name: str) -> np.ndarray:
        labels = _as_label_list(labels, name)
        out = np.empty(len(labels), dtype=np.int64)
        for row, label in enumerate(labels):
            if label is None:
                raise ValueError(f"{name}[{row}] is None; drop unlabelled images before evaluating")
            try:
                out[row] = codes.setdefault(label, len(codes))
            except TypeError as error:
                raise ValueError(f"{name}[{row}] = {label!r} is not hashable") from error
        return out

    return encode(query_labels, "query_labels"), encode(gallery_labels, "gallery_labels")


def relevance_from_labels(
    retrieved_indices: np.ndarray,
    query_labels: Iterable[Hashable],
    gallery_labels: Iterable[Hashable],
    self_index: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``matches`` and ``num_relevant`` for the functions of :mod:`lookalike.metrics.ranking`.

    Turns a top-k search (e.g. ``SearchResult.indices`` of a FAISS index) into relevance flags.

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
    query_codes, gallery_codes = encode_labels(query_labels, gallery_labels)
    indices = np.asarray(retrieved_indices, dtype=np.int64)
    if indices.ndim != 2 or indices.shape[0] != len(query_codes):
        raise ValueError(
            f"retrieved_indices must be (Q={len(query_codes)}, K), got shape {indices.shape}"
        )
    if indices.size and (indices.max() >= len(gallery_codes) or indices.min() < -1):
        raise ValueError(f"retrieved_indices must lie in [-1, {len(gallery_codes)})")
    found = indices >= 0
    matches = found & (gallery_codes[np.maximum(indices, 0)] == query_codes[:, None])
    label_counts = np.bincount(gallery_codes, minlength=int(query_codes.max(initial=-1)) + 1)
    num_relevant = label_counts[query_codes] if len(query_codes) else np.zeros(0, np.int64)
    if self_index is not None:
        self_index = _check_self_index(self_index, len(query_codes), len(gallery_codes))
        has_self = self_index >= 0
        matches = remove_junk(matches, found & (indices == self_index[:, None]))
        self_relevant = has_self & (gallery_codes[np.maximum(self_index, 0)] == query_codes)
        num_relevant = num_relevant - self_relevant
    return matches, num_relevant.astype(np.int64)


def _check_self_index(self_index: np.ndarray, num_queries: int, num_gallery: int) -> np.ndarray:
    self_index = np.asarray(self_index, dtype=np.int64)
    if self_index.shape != (num_queries,):
        raise ValueError(f"self_index must have shape ({num_queries},), got {self_index.shape}")
    if num_queries and (self_index.min() < -1 or self_index.max() >= num_gallery):
        raise ValueError(f"self_index must hold gallery rows in [0, {num_gallery}) or -1")
    return self_index


def _excluded_keys(
    self_index: np.ndarray | None,
    junk: Sequence[Sequence[int]] | None,
    num_queries: int,
    num_gallery: int,
) -> np.ndarray:
    """Sorted unique ``query * N + gallery_row`` of every (query, item) pair left out of scoring."""
    keys = [np.zeros(0, dtype=np.int64)]
    if self_index is not None:
        self_index = _check_self_index(self_index, num_queries, num_gallery)
        rows = np.flatnonzero(self_index >= 0)
        keys.append(rows * num_gallery + self_index[rows])
    if junk is not None:
        if len(junk) != num_queries:
            raise ValueError(f"junk must hold one list of gallery rows per query ({num_queries})")
        for query, rows in enumerate(junk):
            rows = np.asarray(rows, dtype=np.int64).ravel()
            if rows.size and (rows.min() < 0 or rows.max() >= num_gallery):
                raise ValueError(f"junk[{query}] must hold gallery rows in [0, {num_gallery})")
            keys.append(query * num_gallery + rows)
    return np.unique(np.concatenate(keys))


def _prepare(embeddings: np.ndarray, name: str, metric: Metric) -> np.ndarray:
    array = np.asarray(embeddings)
    if array.ndim != 2 or array.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty (rows, D) array, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} holds NaN or infinite values; fix the embeddings first")
    return metric.prepare(array)


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
    chunk_size: int = 1024,
    device: str | torch.device = "cpu",
    junk: Sequence[Sequence[int]] | None = None,
    skip_queries_without_positives: bool = True,
    return_per_query: bool = False,
    progress: bool = False,
) -> dict[str, float] | tuple[dict[str, float], PerQueryMetrics]:
    """Exact retrieval metrics of queries against a gallery, computed chunk by chunk.

    The gallery is ranked for every query by ``metric`` (best first, ties to the lower gallery
    row); the query's own image and its junk items are removed; relevant items are those with the
    query's label. Metrics (definitions in :mod:`lookalike.metrics.ranking`):

    - ``recall@k`` for each ``k`` in ``ks``: a relevant item in the top k (Song et al. 2016);
    - ``precision@k`` for each ``k`` in ``precision_ks``;
    - ``map``: average precision over the full ranking (pml ``mean_average_precision``, k=None);
    - ``map@{map_at_k}``: Kaggle's MAP@K, ``/ min(R, K)``;
    - ``map@r``: MAP@R (Musgrave et al., ECCV 2020);
    - ``weighted_topk``: ``sum_k weights[k] * recall@k`` (600/300/100 at 1/5/10 by default);
    - ``n_queries``, ``n_queries_without_positives``: counts, not metrics.

    Queries whose label has no other item in the gallery are left out of every average by default,
    as pml's ``AccuracyCalculator`` does; with ``skip_queries_without_positives=False`` they count
    as 0.

    Args:
        query_embeddings: ``(Q, D)``.
        query_labels: ``Q`` hashable labels (strings, ints, ...).
        gallery_embeddings: ``(N, D)``.
        gallery_labels: ``N`` hashable labels.
        metric: A name for :func:`lookalike.index.metrics.get_metric` (cosine, ip, l2, l1).
        ks: Cut-offs for recall@k.
        self_index: ``(Q,)`` gallery row of each query's own image, -1 where it has none; pass
            ``np.arange(Q)`` when the queries are the first rows of the gallery.
        precision_ks: Cut-offs for precision@k (may be empty).
        map_at_k: The K of Kaggle's MAP@K.
        weights: ``{k: weight}`` of ``weighted_topk``; 600/300/100 at 1/5/10 when None.
        chunk_size: Queries scored at once; memory grows as ``chunk_size * N``.
        device: Torch device for scoring and sorting.
        junk: For each query, gallery rows that are neither relevant nor irrelevant.
        skip_queries_without_positives: Leave queries without relevant items out of averages.
        return_per_query: Also return a :class:`PerQueryMetrics`.
        progress: Show a progress bar over the query chunks.

    Returns:
        ``{name: value}``, and the :class:`PerQueryMetrics` when ``return_per_query``.
    """
    resolved = get_metric(metric)
    queries = _prepare(query_embeddings, "query_embeddings", resolved)
    gallery = _prepare(gallery_embeddings, "gallery_embeddings", resolved)
    if queries.shape[1] != gallery.shape[1]:
        raise ValueError(
            f"query_embeddings have D={queries.shape[1]} "
            f"but gallery_embeddings have D={gallery.shape[1]}"
        )
    query_codes, gallery_codes = encode_labels(query_labels, gallery_labels)
    num_queries, num_gallery = len(queries), len(gallery)
    if len(query_codes) != num_queries or len(gallery_codes) != num_gallery:
        raise ValueError(
            f"got {len(query_codes)} query labels for {num_queries} query embeddings and "
            f"{len(gallery_codes)} gallery labels for {num_gallery} gallery embeddings"
        )
    recall_ks = _check_ks(ks, "ks", allow_empty=False)
    precision_ks = _check_ks(precision_ks, "precision_ks", allow_empty=True)
    weights = dict(DEFAULT_TOPK_WEIGHTS if weights is None else weights)
    _check_ks(weights, "weights' keys", allow_empty=True)
    map_k = _check_ks([map_at_k], "map_at_k", allow_empty=False)[0]
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    excluded_keys = _excluded_keys(self_index, junk, num_queries, num_gallery)
    top_k = max([*recall_ks, *precision_ks, map_k, *weights])

    device = torch.device(device)
    gallery_tensor = torch.from_numpy(gallery).to(device)
    gallery_codes_tensor = torch.from_numpy(gallery_codes).to(device)
    logger.info(
        "evaluating %d queries against %d gallery items (%s) in chunks of %d",
        num_queries, num_gallery, resolved.name, chunk_size,
    )
    all_rows, all_ranks, all_indices, all_scores = [], [], [], []
    starts = range(0, num_queries, chunk_size)
    if progress:
        starts = track(starts, description="scoring", transient=True)
    for start in starts:
        stop = min(start + chunk_size, num_queries)
        chunk = torch.from_numpy(queries[start:stop]).to(device)
        scores = resolved.pairwise(chunk, gallery_tensor)
        chunk_codes = torch.from_numpy(query_codes[start:stop]).to(device)
        excluded = torch.zeros(scores.shape, dtype=torch.bool, device=device)
        lo, hi = np.searchsorted(excluded_keys, [start * num_gallery, stop * num_gallery])
        chunk_keys = torch.from_numpy(excluded_keys[lo:hi] - start * num_gallery)
        excluded.view(-1)[chunk_keys.to(device)] = True
        relevant = (chunk_codes[:, None] == gallery_codes_tensor[None, :]) & ~excluded
        rows, ranks, indices, top_scores = rank_chunk(scores, relevant, excluded, resolved, top_k)
        all_rows.append(rows.cpu().numpy() + start)
        all_ranks.append(ranks.cpu().numpy())
        all_indices.append(indices.cpu().numpy())
        all_scores.append(top_scores.cpu().numpy())
        logger.debug("scored queries %d-%d of %d", start, stop, num_queries)

    values, num_relevant, first_rank = _metrics_from_ranks(
        np.concatenate(all_rows), np.concatenate(all_ranks), num_queries,
        sorted({*recall_ks, *weights}), precision_ks, map_k, weights,
    )
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
    if not return_per_query:
        return summary
    indices = np.concatenate(all_indices)
    top_scores = np.concatenate(all_scores)
    if indices.shape[1] < top_k:
        padding = top_k - indices.shape[1]
        indices = np.pad(indices, ((0, 0), (0, padding)), constant_values=-1)
        top_scores = np.pad(top_scores, ((0, 0), (0, padding)), constant_values=resolved.worst())
    per_query = PerQueryMetrics(
        values={key: values[key] for key in [*summary_keys, "r_precision"]},
        num_relevant=num_relevant,
        first_positive_rank=first_rank,
        evaluated=evaluated,
        neighbours=SearchResult(top_scores, indices, resolved.higher_is_better),
    )
    return summary, per_query
