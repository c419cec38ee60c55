"""Re-ranking against naive implementations: αQE and DBA loops, Zhong et al.'s full-matrix code."""

from __future__ import annotations

import numpy as np
import pytest

from lookalike.index.result import SearchResult
from lookalike.search.rerank import database_augmentation, k_reciprocal_rerank, query_expansion


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _distances(a: np.ndarray, b: np.ndarray, metric: str) -> np.ndarray:
    """Squared distances as in Zhong et al.'s code (cosine: of normalised vectors)."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    if metric == "cosine":
        a, b = _unit(a), _unit(b)
    diff = a[:, None, :] - b[None, :, :]
    return np.abs(diff).sum(-1) ** 2 if metric == "l1" else (diff**2).sum(-1)


def _search(queries: np.ndarray, gallery: np.ndarray, k: int, metric: str) -> SearchResult:
    distance = _distances(queries, gallery, metric)
    order = np.argsort(distance, axis=1, kind="stable")[:, :k]
    return SearchResult(np.take_along_axis(distance, order, 1), order, higher_is_better=False)


def _clustered(rng: np.random.Generator, num: int, dim: int, classes: int) -> np.ndarray:
    centres = rng.normal(size=(classes, dim))
    return (centres[rng.integers(0, classes, num)] + 0.7 * rng.normal(size=(num, dim))).astype(
        np.float32
    )


def _naive_k_reciprocal(
    queries: np.ndarray, gallery: np.ndarray, k1: int, k2: int, lambda_value: float, metric: str
) -> np.ndarray:
    """Zhong et al.'s published ``re_ranking`` loop, with the query-query block set to infinity."""
    num_q = len(queries)
    nodes = np.concatenate([queries, gallery])
    dist = _distances(nodes, nodes, metric)
    off_diagonal_queries = ~np.eye(num_q, dtype=bool)
    dist[:num_q, :num_q][off_diagonal_queries] = np.inf
    finite_max = np.where(np.isfinite(dist), dist, 0).max(axis=1, keepdims=True)
    original_dist = dist / finite_max
    all_num = len(nodes)
    V = np.zeros_like(original_dist)
    initial_rank = np.argsort(original_dist, axis=1, kind="stable")
    for i in range(all_num):
        forward = initial_rank[i, : k1 + 1]
        backward = initial_rank[forward, : k1 + 1]
        k_reciprocal_index = forward[np.where(backward == i)[0]]
        expansion = k_reciprocal_index
        half = int(np.around(k1 / 2.0))
        for candidate in k_reciprocal_index:
            c_forward = initial_rank[candidate, : half + 1]
            c_backward = initial_rank[c_forward, : half + 1]
            c_reciprocal = c_forward[np.where(c_backward == candidate)[0]]
            if len(np.intersect1d(c_reciprocal, k_reciprocal_index)) > 2.0 / 3 * len(c_reciprocal):
                expansion = np.append(expansion, c_reciprocal)
        expansion = np.unique(expansion)
        weight = np.exp(-original_dist[i, expansion])
        V[i, expansion] = weight / np.sum(weight)
    if k2 != 1:
        V = np.stack([V[initial_rank[i, :k2]].mean(axis=0) for i in range(all_num)])
    jaccard = np.zeros((num_q, all_num))
    for i in range(num_q):
        temp_min = np.zeros(all_num)
        for j in np.where(V[i] != 0)[0]:
            holders = np.where(V[:, j] != 0)[0]
            temp_min[holders] += np.minimum(V[i, j], V[holders, j])
        jaccard[i] = 1 - temp_min / (2.0 - temp_min)
    gallery_columns = slice(num_q, None)
    return (
        jaccard[:, gallery_columns] * (1 - lambda_value)
        + original_dist[:num_q, gallery_columns] * lambda_value
    )


@pytest.mark.parametrize(
    ("metric", "k1", "k2", "lambda_value"),
    [("cosine", 20, 6, 0.3), ("l2", 6, 3, 0.5), ("l1", 5, 1, 0.1), ("cosine", 4, 6, 0.0)],
)
def test_k_reciprocal_equals_full_matrix_algorithm_with_full_lists(metric, k1, k2, lambda_value):
    rng = np.random.default_rng(1)
    gallery = _clustered(rng, 48, 8, 6)
    queries = _clustered(rng, 7, 8, 6)
    num = len(gallery)
    result = k_reciprocal_rerank(
        queries,
        gallery,
        _search(queries, gallery, num, metric),
        _search(gallery, gallery, num, metric),
        k1=k1,
        k2=k2,
        lambda_value=lambda_value,
        metric=metric,
    )
    naive = _naive_k_reciprocal(queries, gallery, k1, k2, lambda_value, metric)
    assert not result.higher_is_better and result.scores.shape == (7, num)
    np.testing.assert_allclose(result.scores, np.sort(naive, axis=1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        np.take_along_axis(naive, result.indices, 1), result.scores, rtol=1e-5, atol=1e-6
    )


def test_k_reciprocal_with_short_lists_reorders_the_candidates_only():
    rng = np.random.default_rng(2)
    gallery = _clustered(rng, 60, 8, 5)
    queries = _clustered(rng, 9, 8, 5)
    candidates = _search(queries, gallery, 25, "cosine")
    result = k_reciprocal_rerank(
        queries, gallery, candidates, _search(gallery, gallery, 15, "cosine"), k1=8, k2=3
    )
    assert result.k == 25
    np.testing.assert_array_equal(np.sort(result.indices, 1), np.sort(candidates.indices, 1))
    assert (np.diff(result.scores, axis=1) >= 0).all()


def test_k_reciprocal_rejects_short_lists_and_unknown_metric():
    rng = np.random.default_rng(3)
    gallery, queries = rng.normal(size=(30, 4)), rng.normal(size=(3, 4))
    with pytest.raises(ValueError, match="k >= 20"):
        k_reciprocal_rerank(
            queries,
            gallery,
            _search(queries, gallery, 10, "l2"),
            _search(gallery, gallery, 30, "l2"),
        )
    with pytest.raises(ValueError, match="valid names: cosine, l1, l2"):
        k_reciprocal_rerank(
            queries,
            gallery,
            _search(queries, gallery, 30, "l2"),
            _search(gallery, gallery, 30, "l2"),
            metric="ip",
        )


def _naive_expansion(anchor: np.ndarray, gallery: np.ndarray, rows, alpha: float) -> np.ndarray:
    anchor = anchor / np.linalg.norm(anchor)
    total = anchor.astype(np.float64).copy()
    for row in rows:
        vector = gallery[row] / np.linalg.norm(gallery[row])
        total += max(0.0, float(anchor @ vector)) ** alpha * vector
    return total / np.linalg.norm(total)


@pytest.mark.parametrize(("n", "alpha"), [(1, 3.0), (3, 0.0), (4, 1.5)])
def test_query_expansion_matches_naive_loop(n, alpha):
    rng = np.random.default_rng(4)
    gallery = rng.normal(size=(20, 6)).astype(np.float32)
    queries = rng.normal(size=(5, 6)).astype(np.float32)
    neighbours = _search(queries, gallery, 6, "cosine")
    expanded = query_expansion(queries, gallery, neighbours, n=n, alpha=alpha)
    for q in range(5):
        expected = _naive_expansion(queries[q], gallery, neighbours.indices[q, :n], alpha)
        np.testing.assert_allclose(expanded[q], expected, rtol=1e-5, atol=1e-6)


def test_database_augmentation_matches_naive_loop_and_skips_self():
    rng = np.random.default_rng(5)
    gallery = rng.normal(size=(15, 5)).astype(np.float32)
    with_self = _search(gallery, gallery, 5, "cosine")
    augmented = database_augmentation(gallery, with_self, n=3, alpha=3.0)
    for g in range(15):
        others = [row for row in with_self.indices[g] if row != g][:3]
        expected = _naive_expansion(gallery[g], gallery, others, 3.0)
        np.testing.assert_allclose(augmented[g], expected, rtol=1e-5, atol=1e-6)
    without_self = SearchResult(with_self.scores[:, 1:], with_self.indices[:, 1:], False)
    np.testing.assert_allclose(
        database_augmentation(gallery, without_self, n=3, alpha=3.0), augmented, atol=1e-6
    )
    with pytest.raises(ValueError, match="k >= 6"):
        database_augmentation(gallery, with_self, n=5)


def test_query_expansion_rejects_bad_arguments():
    gallery, queries = np.eye(4, dtype=np.float32), np.eye(4, dtype=np.float32)[:2]
    neighbours = _search(queries, gallery, 2, "cosine")
    with pytest.raises(ValueError, match="k >= 3"):
        query_expansion(queries, gallery, neighbours, n=3)
    with pytest.raises(ValueError, match="alpha"):
        query_expansion(queries, gallery, neighbours, alpha=-1.0)
