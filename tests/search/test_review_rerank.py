"""Review of k-reciprocal re-ranking, αQE and DBA in the cases users hit.

The reference is Zhong et al.'s ``re_ranking`` (CVPR 2017) written as a loop over a full distance
matrix in which pairs the lists never see are infinite: query-query pairs, and in all-vs-all the
query and its own gallery copy. Ties are broken as the lists are built: the node itself first,
then gallery items before queries, then by row number.
"""

from __future__ import annotations

import numpy as np
import pytest

from lookalike.index.result import SearchResult
from lookalike.search.rerank import database_augmentation, k_reciprocal_rerank, query_expansion


def _squared(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    diff = a.astype(np.float64)[:, None, :] - b.astype(np.float64)[None, :, :]
    return (diff**2).sum(-1)


def _naive_zhong(
    dist: np.ndarray,
    num_q: int,
    k1: int,
    k2: int,
    lambda_value: float,
    weight_dist: np.ndarray | None = None,
) -> np.ndarray:
    """``(Q, Q + N)`` final distances; ``dist`` is the full squared-distance matrix, inf = unseen.

    ``weight_dist`` (``dist`` when None) gives the distances inside ``exp(-d)`` of ``V``.
    """
    finite_max = np.where(np.isfinite(dist), dist, 0).max(axis=1, keepdims=True)
    original = dist / finite_max
    weighted = original if weight_dist is None else weight_dist / finite_max
    size = len(dist)
    is_query = np.arange(size) < num_q
    initial_rank = np.stack(
        [
            np.lexsort((np.arange(size), is_query, np.arange(size) != i, original[i]))
            for i in range(size)
        ]
    )
    V = np.zeros_like(original)
    half = int(np.around(k1 / 2.0))
    for i in range(size):
        forward = initial_rank[i, : k1 + 1]
        k_reciprocal = [j for j in forward if i in initial_rank[j, : k1 + 1]]
        expansion = set(k_reciprocal)
        for c in k_reciprocal:
            c_forward = initial_rank[c, : half + 1]
            c_reciprocal = [j for j in c_forward if c in initial_rank[j, : half + 1]]
            if len(set(c_reciprocal) & set(k_reciprocal)) > 2.0 / 3 * len(c_reciprocal):
                expansion |= set(c_reciprocal)
        members = sorted(expansion)
        weight = np.exp(-weighted[i, members])
        V[i, members] = weight / weight.sum()
    if k2 != 1:
        V = np.stack([V[initial_rank[i, :k2]].mean(axis=0) for i in range(size)])
    final = np.empty((num_q, size))
    for i in range(num_q):
        for j in range(size):
            final[i, j] = (1 - lambda_value) * (
                1 - np.minimum(V[i], V[j]).sum() / np.maximum(V[i], V[j]).sum()
            ) + (lambda_value * original[i, j] if lambda_value else 0.0)
    return final


def _full_lists(queries: np.ndarray, gallery: np.ndarray, own: np.ndarray | None = None):
    """Exact candidate lists (own row dropped) and gallery-vs-gallery lists, ties by row."""
    query_distance = _squared(queries, gallery)
    if own is not None:
        query_distance[np.arange(len(queries)), own] = np.inf
    width = len(gallery) - (own is not None)
    order = np.argsort(query_distance, axis=1, kind="stable")[:, :width]
    gallery_distance = _squared(gallery, gallery)
    gallery_order = np.argsort(gallery_distance, axis=1, kind="stable")
    return (
        SearchResult(np.take_along_axis(query_distance, order, 1), order, False),
        SearchResult(np.take_along_axis(gallery_distance, gallery_order, 1), gallery_order, False),
    )


def _clustered(rng: np.random.Generator, num: int, dim: int, classes: int) -> np.ndarray:
    centres = rng.normal(size=(classes, dim))
    rows = centres[rng.integers(0, classes, num)] + 0.7 * rng.normal(size=(num, dim))
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize(("k1", "k2", "lambda_value"), [(6, 3, 0.3), (4, 1, 0.0), (8, 6, 0.5)])
def test_all_vs_all_k_reciprocal_equals_zhong_without_the_own_copy(k1, k2, lambda_value):
    """Queries are the gallery; each query's own copy is never a candidate and never comes back.

    The own copy is absent from the query's list and the query from its copy's list (both
    inf for the neighbour lists), but when a candidate's half-neighbourhood brings the copy into
    the query's expanded set ``R*``, ``V`` weights it by its true distance (0): the reference
    takes the lists from the first matrix and the weights from the second.
    """
    rng = np.random.default_rng(11)
    gallery = _clustered(rng, 30, 6, 4)
    own = np.arange(30)
    candidates, around = _full_lists(gallery, gallery, own)
    result = k_reciprocal_rerank(
        gallery, gallery, candidates, around, k1=k1, k2=k2, lambda_value=lambda_value, metric="l2"
    )
    assert not (result.indices == own[:, None]).any()
    nodes = np.concatenate([gallery, gallery])
    dist = _squared(nodes, nodes)
    dist[:30, :30] = np.where(np.eye(30, dtype=bool), 0.0, np.inf)
    weights = dist.copy()
    dist[own, own + 30] = dist[own + 30, own] = np.inf
    final = _naive_zhong(dist, 30, k1, k2, lambda_value, weights)[:, 30:]
    np.testing.assert_allclose(
        result.scores, np.take_along_axis(final, result.indices, 1), rtol=1e-6, atol=1e-9
    )
    assert (np.diff(result.scores, axis=1) >= 0).all()


def test_duplicate_gallery_vectors_and_ties():
    """Exact duplicates (distance 0 between different rows) and a query equal to a gallery row."""
    rng = np.random.default_rng(12)
    base = _clustered(rng, 12, 5, 3)
    gallery = np.concatenate([base, base[:4], base[:2]])
    queries = np.concatenate([base[5:6], _clustered(rng, 3, 5, 3)])
    candidates, around = _full_lists(queries, gallery)
    result = k_reciprocal_rerank(queries, gallery, candidates, around, k1=5, k2=3, metric="l2")
    nodes = np.concatenate([queries, gallery])
    dist = _squared(nodes, nodes)
    dist[:4, :4] = np.where(np.eye(4, dtype=bool), 0.0, np.inf)
    final = _naive_zhong(dist, 4, 5, 3, 0.3)[:, 4:]
    np.testing.assert_allclose(
        result.scores, np.take_along_axis(final, result.indices, 1), rtol=1e-6, atol=1e-9
    )
    np.testing.assert_array_equal(np.sort(result.indices, 1), np.sort(candidates.indices, 1))


def test_cosine_is_l2_of_unit_vectors():
    rng = np.random.default_rng(13)
    gallery = rng.normal(size=(25, 4)).astype(np.float32) * 3.0
    queries = rng.normal(size=(3, 4)).astype(np.float32)
    unit_g = gallery / np.linalg.norm(gallery, axis=1, keepdims=True)
    unit_q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    candidates, around = _full_lists(unit_q, unit_g)
    cosine = k_reciprocal_rerank(queries, gallery, candidates, around, k1=5, k2=2, metric="cosine")
    l2 = k_reciprocal_rerank(unit_q, unit_g, candidates, around, k1=5, k2=2, metric="l2")
    np.testing.assert_array_equal(cosine.indices, l2.indices)
    np.testing.assert_allclose(cosine.scores, l2.scores, rtol=1e-5, atol=1e-7)


def test_expansion_skips_padding_and_self_and_keeps_unit_norm():
    """-1 padding (a query whose own row was dropped from a tiny gallery) adds nothing."""
    rng = np.random.default_rng(14)
    gallery = rng.normal(size=(3, 4)).astype(np.float32)
    queries = gallery[:2].copy()
    padded = SearchResult(np.array([[0.9, -np.inf], [0.8, 0.1]]), np.array([[2, -1], [2, 0]]), True)
    expanded = query_expansion(queries, gallery, padded, n=2, alpha=1.0)
    unit = gallery / np.linalg.norm(gallery, axis=1, keepdims=True)
    for q, rows in enumerate([[2], [2, 0]]):
        total = unit[q].astype(np.float64).copy()
        for row in rows:
            total += max(0.0, float(unit[q] @ unit[row])) * unit[row]
        np.testing.assert_allclose(expanded[q], total / np.linalg.norm(total), atol=1e-6)
    # DBA with exact duplicates: a duplicate is another row, so it is averaged in; self is not.
    duplicated = np.concatenate([gallery, gallery[:1]])
    order = np.argsort(-(duplicated @ duplicated.T), axis=1, kind="stable")
    scores = np.take_along_axis(duplicated @ duplicated.T, order, 1)
    augmented = database_augmentation(duplicated, SearchResult(scores, order, True), n=1)
    np.testing.assert_allclose(augmented[0], unit[0], atol=1e-6)
    np.testing.assert_allclose(augmented[3], unit[0], atol=1e-6)
