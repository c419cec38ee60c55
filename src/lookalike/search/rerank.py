"""Re-ranking of top-k search results: query expansion, database augmentation, k-reciprocal.

Every function takes the neighbours as a :class:`SearchResult` computed by the caller, so any
index (exact search, FAISS) can provide them; scores are recomputed from the embeddings where a
method needs them, so approximate index scores never leak into the re-ranking. No function builds
a matrix over all pairs of images: the work is bounded by the lengths of the neighbour lists.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse

from lookalike.index.metrics import get_metric
from lookalike.index.result import SearchResult

_PAIR_BUDGET = 1 << 22
_RERANK_METRICS = ("cosine", "l1", "l2")


def _unit_rows(embeddings: np.ndarray, name: str) -> np.ndarray:
    rows = np.asarray(embeddings, dtype=np.float32)
    if rows.ndim != 2:
        raise ValueError(f"{name} must be a (N, D) array, got shape {rows.shape}")
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)


def _check_neighbours(
    neighbours: SearchResult, num_rows: int, num_gallery: int, min_columns: int, name: str
) -> np.ndarray:
    if len(neighbours) != num_rows:
        raise ValueError(f"{name} has {len(neighbours)} rows but there are {num_rows} embeddings")
    if neighbours.k < min_columns:
        raise ValueError(
            f"{name} holds {neighbours.k} neighbours per row; search with k >= {min_columns}"
        )
    indices = neighbours.indices
    if (indices >= num_gallery).any() or (indices < -1).any():
        raise ValueError(
            f"{name} holds row numbers outside [-1, {num_gallery}); search this gallery"
        )
    return indices


def _alpha_weighted_mean(
    anchors: np.ndarray, gallery: np.ndarray, neighbour_rows: np.ndarray, alpha: float
) -> np.ndarray:
    """``normalise(x + sum_i max(0, x.g_i)^alpha g_i)`` for each anchor row ``x``, -1 skipped."""
    out = np.empty_like(anchors)
    width = max(neighbour_rows.shape[1], 1) * anchors.shape[1]
    step = max(1, _PAIR_BUDGET // width)
    for start in range(0, len(anchors), step):
        rows = neighbour_rows[start : start + step]
        valid = rows >= 0
        vectors = gallery[np.where(valid, rows, 0)]
        anchor = anchors[start : start + step]
        similarity = np.einsum("cnd,cd->cn", vectors, anchor)
        weights = np.power(np.clip(similarity, 0.0, None), alpha) * valid
        summed = anchor + np.einsum("cn,cnd->cd", weights, vectors)
        out[start : start + step] = summed / np.maximum(
            np.linalg.norm(summed, axis=1, keepdims=True), 1e-12
        )
    return out


def _check_expansion(n: int, alpha: float) -> None:
    if n < 1:
        raise ValueError(f"n must be a positive number of neighbours, got {n}")
    if alpha < 0:
        raise ValueError(f"alpha must be >= 0, got {alpha}")


def query_expansion(
    query_embeddings: np.ndarray,
    gallery_embeddings: np.ndarray,
    neighbours: SearchResult,
    n: int = 2,
    alpha: float = 3.0,
) -> np.ndarray:
    """α-weighted query expansion (αQE; Radenović, Tolias, Chum, "Fine-tuning CNN Image Retrieval
    with No Human Annotation", TPAMI 2018).

    Each query ``q`` becomes ``normalise(q + sum_{i<=n} max(0, q.g_i)^alpha g_i)`` over its
    top-``n`` neighbours ``g_i`` (embeddings L2-normalised first, so ``q.g_i`` is the cosine
    similarity and the query itself has weight 1). ``alpha = 0`` is average query expansion
    (Chum et al., "Total Recall", ICCV 2007). Search the gallery again with the result.

    Args:
        query_embeddings: ``(Q, D)``.
        gallery_embeddings: ``(N, D)``.
        neighbours: ``(Q, k)`` top-k gallery rows of each query, ``k >= n``; -1 rows are skipped.
        n: Neighbours averaged into each query.
        alpha: Exponent on the similarities.

    Returns:
        ``(Q, D)`` float32 expanded, L2-normalised queries.
    """
    _check_expansion(n, alpha)
    queries = _unit_rows(query_embeddings, "query_embeddings")
    gallery = _unit_rows(gallery_embeddings, "gallery_embeddings")
    if queries.shape[1] != gallery.shape[1]:
        raise ValueError(
            f"queries have dimension {queries.shape[1]}, the gallery {gallery.shape[1]}"
        )
    rows = _check_neighbours(neighbours, len(queries), len(gallery), n, "neighbours")
    return _alpha_weighted_mean(queries, gallery, rows[:, :n], alpha)


def database_augmentation(
    gallery_embeddings: np.ndarray,
    gallery_neighbours: SearchResult,
    n: int = 2,
    alpha: float = 3.0,
) -> np.ndarray:
    """Database-side augmentation (DBA; Arandjelović and Zisserman, "Three things everyone should
    know to improve object retrieval", CVPR 2012; α-weighted as in Radenović et al. 2018).

    Each gallery vector ``g`` becomes ``normalise(g + sum_{i<=n} max(0, g.g_i)^alpha g_i)`` over its
    ``n`` nearest *other* gallery vectors, i.e. αQE applied to the gallery. Index the result in
    place of the gallery and search it with (optionally expanded) queries.

    Args:
        gallery_embeddings: ``(N, D)``.
        gallery_neighbours: ``(N, k)`` gallery-vs-gallery neighbours, best first; each row's own
            index may be present (it is skipped), so ``k >= n + 1`` gives ``n`` others.
        n: Neighbours averaged into each gallery vector.
        alpha: Exponent on the similarities.

    Returns:
        ``(N, D)`` float32 augmented, L2-normalised gallery vectors.
    """
    _check_expansion(n, alpha)
    gallery = _unit_rows(gallery_embeddings, "gallery_embeddings")
    num = len(gallery)
    rows = _check_neighbours(gallery_neighbours, num, num, 1, "gallery_neighbours")
    others = np.where(rows == np.arange(len(gallery))[:, None], -1, rows)
    order = np.argsort(others < 0, axis=1, kind="stable")
    others = np.take_along_axis(others, order, axis=1)[:, :n]
    needed = min(n, num - 1)
    if ((others >= 0).sum(axis=1) < needed).any():
        raise ValueError(
            f"gallery_neighbours holds fewer than {needed} neighbours besides the row itself; "
            f"search the gallery with k >= {n + 1}"
        )
    return _alpha_weighted_mean(gallery, gallery, others, alpha)


def _pair_distances(
    nodes: np.ndarray, rows: np.ndarray, columns: np.ndarray, metric: str
) -> np.ndarray:
    """``(R, L)`` float64 squared distances of ``nodes[rows]`` to ``nodes[columns]``; inf at -1."""
    out = np.full(columns.shape, np.inf)
    step = max(1, _PAIR_BUDGET // max(columns.shape[1] * nodes.shape[1], 1))
    for start in range(0, len(rows), step):
        cols = columns[start : start + step]
        valid = cols >= 0
        diff = nodes[np.where(valid, cols, 0)].astype(np.float64) - nodes[
            rows[start : start + step]
        ][:, None, :].astype(np.float64)
        distance = np.abs(diff).sum(-1) ** 2 if metric == "l1" else (diff * diff).sum(-1)
        out[start : start + step] = np.where(valid, distance, np.inf)
    return out


def _sorted_by_distance(nodes: np.ndarray, rows: np.ndarray, columns: np.ndarray, metric: str):
    distance = _pair_distances(nodes, rows, columns, metric)
    order = np.argsort(distance, axis=1, kind="stable")
    return np.take_along_axis(columns, order, axis=1), np.take_along_axis(distance, order, axis=1)


def _reciprocal(lists: np.ndarray, width: int) -> np.ndarray:
    """``(M, width)`` bool: node ``i`` is in the first ``width`` of its ``j``-th neighbour's list"""
    top = lists[:, :width]
    mask = np.empty(top.shape, dtype=bool)
    step = max(1, _PAIR_BUDGET // (width * width))
    for start in range(0, len(top), step):
        chunk = top[start : start + step]
        ids = np.arange(start, start + len(chunk))[:, None, None]
        mask[start : start + step] = (top[chunk] == ids).any(-1)
    return mask


def _encodings(
    nodes: np.ndarray,
    lists: np.ndarray,
    row_max: np.ndarray,
    num_queries: int,
    k1: int,
    metric: str,
) -> sparse.csr_matrix:
    """Zhong et al.'s ``V``: exp-weighted indicators of each node's expanded k-reciprocal set."""
    half = int(np.around(k1 / 2.0))
    full_top, half_top = lists[:, : k1 + 1], lists[:, : half + 1]
    full_rec, half_rec = _reciprocal(lists, k1 + 1), _reciprocal(lists, half + 1)
    row_ids, col_ids, values = [], [], []
    per_row = (k1 + 1) ** 2 * (half + 1) + (k1 + 1) * (half + 2) * nodes.shape[1]
    step = max(1, _PAIR_BUDGET // per_row)
    for start in range(0, len(lists), step):
        rows = np.arange(start, min(start + step, len(lists)))
        own = np.where(full_rec[rows], full_top[rows], -1)
        candidates = full_top[rows]
        halves = np.where(half_rec[candidates], half_top[candidates], -1)
        shared = ((halves[..., None] == own[:, None, None, :]) & (halves[..., None] >= 0)).any(-1)
        accepted = full_rec[rows] & (shared.sum(-1) > 2.0 / 3.0 * (halves >= 0).sum(-1))
        members = np.concatenate(
            [own, np.where(accepted[..., None], halves, -1).reshape(len(rows), -1)], axis=1
        )
        members.sort(axis=1)
        members[:, 1:][members[:, 1:] == members[:, :-1]] = -1
        distance = _pair_distances(nodes, rows, members, metric)
        # Query-to-query distances are never searched, so they count as infinite (weight 0).
        other_query = (rows[:, None] < num_queries) & (members >= 0) & (members < num_queries)
        distance[other_query & (members != rows[:, None])] = np.inf
        weights = np.exp(-distance / row_max[rows, None])
        weights /= weights.sum(axis=1, keepdims=True)
        keep = weights > 0
        row_ids.append(np.broadcast_to(rows[:, None], members.shape)[keep])
        col_ids.append(members[keep])
        values.append(weights[keep])
    size = len(lists)
    return sparse.csr_matrix(
        (np.concatenate(values), (np.concatenate(row_ids), np.concatenate(col_ids))),
        shape=(size, size),
    )


def _node_lists(
    nodes: np.ndarray, candidates: np.ndarray, gallery_rows: np.ndarray, length: int, metric: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The first ``length`` nodes of each node's list (itself first) and its largest distance.

    Nodes ``0 .. Q-1`` are the queries and ``Q .. Q+N-1`` the gallery.

    Returns:
        ``(Q + N, length)`` node lists, ``(Q + N,)`` largest known distances, and each query's full
        sorted list ``(Q, K + 1)`` with its squared distances.
    """
    num_queries, num_gallery = len(candidates), len(gallery_rows)
    query_ids, gallery_ids = np.arange(num_queries), np.arange(num_gallery)
    query_lists, query_distance = _sorted_by_distance(
        nodes, query_ids, np.concatenate([query_ids[:, None], candidates + num_queries], 1), metric
    )
    others = np.where((gallery_rows == gallery_ids[:, None]) | (gallery_rows < 0), -1, gallery_rows)
    others = np.take_along_axis(others, np.argsort(others < 0, axis=1, kind="stable"), axis=1)
    if (others[:, : length - 1] < 0).any():
        raise ValueError(
            f"gallery_neighbours needs {length - 1} neighbours besides each row itself; "
            "search with a larger k"
        )
    own_and_others = np.concatenate([gallery_ids[:, None], others], axis=1)
    gallery_lists, gallery_distance = _sorted_by_distance(
        nodes,
        gallery_ids + num_queries,
        np.where(own_and_others >= 0, own_and_others + num_queries, -1),
        metric,
    )
    # Each query joins the lists of the gallery items among its candidates.
    pair_gallery = query_lists[:, 1:].ravel() - num_queries
    pair_query = np.repeat(query_ids, query_lists.shape[1] - 1)
    pair_distance = query_distance[:, 1:].ravel()
    finite_gallery = np.where(np.isfinite(gallery_distance), gallery_distance, 0.0)
    row_max = np.concatenate([query_distance.max(axis=1), finite_gallery.max(axis=1)])
    np.maximum.at(row_max, pair_gallery + num_queries, pair_distance)
    order = np.lexsort((pair_distance, pair_gallery))
    rank = np.arange(len(order)) - np.searchsorted(pair_gallery[order], pair_gallery[order])
    kept, rank = order[rank < length], rank[rank < length]
    inserted = np.full((num_gallery, length), -1, dtype=np.int64)
    inserted_distance = np.full((num_gallery, length), np.inf)
    inserted[pair_gallery[kept], rank] = pair_query[kept]
    inserted_distance[pair_gallery[kept], rank] = pair_distance[kept]
    merged = np.concatenate([gallery_lists[:, :length], inserted], axis=1)
    merged_distance = np.concatenate([gallery_distance[:, :length], inserted_distance], axis=1)
    merged_order = np.argsort(merged_distance, axis=1, kind="stable")[:, :length]
    lists = np.concatenate(
        [query_lists[:, :length], np.take_along_axis(merged, merged_order, axis=1)]
    )
    return lists, np.maximum(row_max, 1e-12), query_lists, query_distance


def k_reciprocal_rerank(
    query_embeddings: np.ndarray,
    gallery_embeddings: np.ndarray,
    query_neighbours: SearchResult,
    gallery_neighbours: SearchResult,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
    metric: str = "cosine",
) -> SearchResult:
    """k-reciprocal re-ranking (Zhong, Zheng, Cao, Li, "Re-ranking Person Re-identification with
    k-reciprocal Encoding", CVPR 2017), computed from neighbour lists only.

    The graph holds the queries and the gallery; as in the paper, distances are squared (Euclidean,
    i.e. ``2 - 2 cos`` for cosine, or L1), each node's are divided by its largest known one, its
    list starts with itself, and ``V`` weights its expanded k-reciprocal set ``R*(i, k1)`` by
    ``exp(-d)``. A query's list is itself plus its candidates; a gallery item's list merges its
    gallery neighbours with the queries whose candidates hold it; query-to-query distances are
    never searched and count as infinite. After the local query expansion over each node's
    top-``k2`` list, the Jaccard distance ``1 - sum min(V_q, V_g) / sum max(V_q, V_g)`` and
    ``(1 - lambda) * jaccard + lambda * distance`` re-sort each query's candidates. With lists
    covering the whole gallery this is the paper's algorithm without the query-query block; shorter
    lists bound the cost to ``O((Q + N) k1^2 k1/2)``.

    Args:
        query_embeddings: ``(Q, D)``.
        gallery_embeddings: ``(N, D)``.
        query_neighbours: ``(Q, K)`` candidate gallery rows of each query, ``K >= max(k1, k2 - 1)``,
            no -1 padding; these are re-ordered.
        gallery_neighbours: ``(N, K')`` gallery-vs-gallery neighbours (the row's own index may be
            present) holding at least ``max(k1, k2 - 1)`` others per row.
        k1: Size of the k-reciprocal neighbourhoods.
        k2: Size of the local query expansion (1 disables it).
        lambda_value: Weight of the original distance in ``[0, 1]``.
        metric: "cosine", "l2" or "l1"; distances are recomputed from the embeddings with it.

    Returns:
        ``(Q, K)`` :class:`SearchResult` of the same candidates re-sorted; scores are the final
        distances (``higher_is_better=False``).
    """
    chosen = get_metric(metric)
    if chosen.name not in _RERANK_METRICS:
        raise ValueError(
            f"unknown re-ranking metric {metric!r}; valid names: {', '.join(_RERANK_METRICS)}"
        )
    if k1 < 1 or k2 < 1:
        raise ValueError(f"k1 and k2 must be positive, got k1={k1}, k2={k2}")
    if not 0.0 <= lambda_value <= 1.0:
        raise ValueError(f"lambda_value must lie in [0, 1], got {lambda_value}")
    queries, gallery = np.asarray(query_embeddings), np.asarray(gallery_embeddings)
    if queries.ndim != 2 or gallery.ndim != 2 or queries.shape[1] != gallery.shape[1]:
        raise ValueError(
            f"embeddings must be (Q, D) and (N, D), got {queries.shape} and {gallery.shape}"
        )
    queries, gallery = chosen.prepare(queries), chosen.prepare(gallery)
    num_queries, num_gallery = len(queries), len(gallery)
    length = max(k1 + 1, k2)
    candidates = _check_neighbours(
        query_neighbours, num_queries, num_gallery, length - 1, "query_neighbours"
    )
    if (candidates < 0).any():
        raise ValueError("query_neighbours holds -1 padding; search with k <= the gallery size")
    gallery_rows = _check_neighbours(
        gallery_neighbours, num_gallery, num_gallery, 1, "gallery_neighbours"
    )
    nodes = np.concatenate([queries, gallery])
    lists, row_max, query_lists, query_distance = _node_lists(
        nodes, candidates, gallery_rows, length, chosen.name
    )
    encodings = _encodings(nodes, lists, row_max, num_queries, k1, chosen.name)
    if k2 > 1:
        size = len(lists)
        averaging = sparse.csr_matrix(
            (np.full(size * k2, 1.0 / k2), (np.repeat(np.arange(size), k2), lists[:, :k2].ravel())),
            shape=(size, size),
        )
        encodings = (averaging @ encodings).tocsr()
    jaccard = _jaccard(encodings, np.arange(num_queries), query_lists[:, 1:])
    original = query_distance[:, 1:] / row_max[:num_queries, None]
    final = (1.0 - lambda_value) * jaccard + lambda_value * original
    final_order = np.argsort(final, axis=1, kind="stable")
    return SearchResult(
        np.take_along_axis(final, final_order, axis=1),
        np.take_along_axis(query_lists[:, 1:] - num_queries, final_order, axis=1),
        higher_is_better=False,
    )


def _jaccard(
    encodings: sparse.csr_matrix, query_ids: np.ndarray, candidate_nodes: np.ndarray
) -> np.ndarray:
    """``(Q, K)`` ``1 - sum min / sum max`` between each query's and its candidates' encodings."""
    width = candidate_nodes.shape[1]
    out = np.empty(candidate_nodes.shape)
    step = max(1, 4096 // width)
    for start in range(0, len(query_ids), step):
        cands = candidate_nodes[start : start + step]
        query_rows = encodings[np.repeat(query_ids[start : start + step], width)]
        overlap = np.asarray(encodings[cands.ravel()].minimum(query_rows).sum(axis=1)).ravel()
        out[start : start + step] = (1.0 - overlap / (2.0 - overlap)).reshape(cands.shape)
    return out
