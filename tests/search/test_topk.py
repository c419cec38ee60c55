"""Batched top-k search and self-exclusion, against exact search and a naive loop."""

from __future__ import annotations

import numpy as np
import pytest

from lookalike.embed.store import EmbeddingSet
from lookalike.index import create_index, exact_search
from lookalike.index.result import SearchResult
from lookalike.search.topk import drop_rows, search, search_embeddings, self_exclusion


def embedding_set(rows: np.ndarray, prefix: str, fingerprint: str | None = "fp") -> EmbeddingSet:
    ids = [f"{prefix}{i}" for i in range(len(rows))]
    return EmbeddingSet(rows, ids, [f"/{i}.png" for i in ids], [None] * len(rows),
                        {"fingerprint": fingerprint} if fingerprint else {})


@pytest.fixture
def gallery_rows() -> np.ndarray:
    return np.random.default_rng(6).normal(size=(150, 8)).astype(np.float32)


def test_batched_search_equals_one_call(gallery_rows: np.ndarray) -> None:
    queries = np.random.default_rng(7).normal(size=(23, 8)).astype(np.float32)
    index = create_index("flat", 8, "l2")
    index.add(gallery_rows)
    advances: list[int] = []
    batched = search(index, queries, 4, batch_size=5, progress=advances.append)
    whole = index.search(queries, 4)
    np.testing.assert_array_equal(batched.indices, whole.indices)
    np.testing.assert_allclose(batched.scores, whole.scores)
    assert advances == [5, 5, 5, 5, 3] and batched.higher_is_better is False
    with pytest.raises(ValueError, match="batch_size"):
        search(index, queries, 4, batch_size=0)
    assert search(index, queries[:0], 4).scores.shape == (0, 4)


@pytest.mark.parametrize("kind", ["flat", "exact_torch", "hnsw"])
@pytest.mark.parametrize("metric", ["cosine", "l2", "l1"])
def test_exclude_self_matches_exact_search(
    gallery_rows: np.ndarray, kind: str, metric: str
) -> None:
    gallery = embedding_set(gallery_rows, "g")
    query = gallery.select(np.arange(0, 150, 3))  # queries are gallery rows 0, 3, 6, ...
    result = search_embeddings(query, gallery, 5, index_kind=kind, metric=metric,
                               exclude_self=True, batch_size=16)
    reference = exact_search(query.embeddings, gallery.embeddings, 5, metric,
                             exclude=np.arange(0, 150, 3))
    np.testing.assert_array_equal(result.indices, reference.indices)
    np.testing.assert_allclose(result.scores, reference.scores, rtol=1e-5, atol=1e-4)
    assert all(3 * q not in result.indices[q] for q in range(len(query)))
    kept = search_embeddings(query, gallery, 5, index_kind=kind, metric=metric)
    np.testing.assert_array_equal(kept.indices[:, 0], np.arange(0, 150, 3))


def test_exclude_self_against_naive_loop(gallery_rows: np.ndarray) -> None:
    gallery = embedding_set(gallery_rows[:20], "g")
    foreign = embedding_set(gallery_rows[20:22], "other")  # ids absent from the gallery
    query = EmbeddingSet(
        np.concatenate([gallery.embeddings[:3], foreign.embeddings]),
        gallery.ids[:3] + foreign.ids, gallery.paths[:3] + foreign.paths, [None] * 5,
        {"fingerprint": "fp"},
    )
    result = search_embeddings(query, gallery, 25, metric="l2", exclude_self=True)
    for q in range(5):
        distances = np.sqrt(((gallery.embeddings - query.embeddings[q]) ** 2).sum(axis=1))
        order = [int(i) for i in np.argsort(distances) if gallery.ids[i] != query.ids[q]]
        assert result.indices[q, : len(order)].tolist() == order
        assert (result.indices[q, len(order):] == -1).all()
        assert np.isinf(result.scores[q, len(order):]).all()


def test_drop_rows_keeps_order() -> None:
    result = SearchResult(
        np.array([[9, 8, 7, 6], [5, 4, 3, 2], [1, 0, -1, -2]], dtype=np.float32),
        np.array([[4, 2, 7, 1], [3, 0, 5, 6], [8, 9, -1, -1]]),
    )
    dropped = drop_rows(result, np.array([2, -1, 9]), 3)
    assert dropped.indices.tolist() == [[4, 7, 1], [3, 0, 5], [8, -1, -1]]
    assert dropped.scores.tolist() == [[9, 7, 6], [5, 4, 3], [1, -1, -2]]
    with pytest.raises(ValueError, match="exclude has 2 entries"):
        drop_rows(result, np.array([1, 2]), 3)


def test_self_exclusion_map_and_errors(gallery_rows: np.ndarray) -> None:
    assert self_exclusion(["b", "z", "a"], ["a", "b", "c"]).tolist() == [1, -1, 0]
    with pytest.raises(ValueError, match="'a' appears more than once"):
        self_exclusion(["a"], ["a", "b", "a"])
    query = embedding_set(gallery_rows[:5], "q", fingerprint="one")
    gallery = embedding_set(gallery_rows, "g", fingerprint="two")
    with pytest.raises(ValueError, match="model one but gallery embeddings from two"):
        search_embeddings(query, gallery, 3)
    narrow = embedding_set(gallery_rows[:5, :4], "q")
    with pytest.raises(ValueError, match="dimension 4 but gallery embeddings 8"):
        search_embeddings(narrow, embedding_set(gallery_rows, "g"), 3)


def _naive_ranking(queries: np.ndarray, gallery: np.ndarray, k: int, exclude: np.ndarray) -> np.ndarray:
    """Squared-L2 argsort of every gallery row, the excluded row dropped, ``k`` kept, -1 padded."""
    rows = []
    for q, query in enumerate(queries):
        order = [int(i) for i in np.argsort(((gallery - query) ** 2).sum(axis=1), kind="stable")]
        order = [i for i in order if i != exclude[q]][:k]
        rows.append(order + [-1] * (k - len(order)))
    return np.array(rows)


@pytest.mark.parametrize("kind", ["flat", "exact_torch"])
@pytest.mark.parametrize("k", [1, 4, 11, 12, 40])
def test_search_exclude_rows_against_naive_argsort(gallery_rows: np.ndarray, kind: str, k: int) -> None:
    gallery = gallery_rows[:12]
    queries = np.concatenate([gallery[[3, 0, 11]], gallery_rows[50:52]])
    exclude = np.array([3, 0, 11, -1, -1])
    index = create_index(kind, 8, "l2")
    index.add(gallery)
    result = search(index, queries, k, exclude_rows=exclude, batch_size=2)
    kept = min(k, 12)  # clamped to the index size
    assert result.indices.shape == (5, kept)
    np.testing.assert_array_equal(result.indices, _naive_ranking(queries, gallery, kept, exclude))
    padded = result.indices == -1
    assert np.isposinf(result.scores[padded]).all() and np.isfinite(result.scores[~padded]).all()
    # A query that is no gallery row loses nothing; one that is loses its own row only.
    assert (result.indices[3:] >= 0).all()
    assert padded[:3].sum(axis=1).tolist() == ([1, 1, 1] if k >= 12 else [0, 0, 0])


def test_search_clamps_k_to_the_index_size(gallery_rows: np.ndarray) -> None:
    index = create_index("flat", 8, "cosine")
    index.add(gallery_rows[:6])
    result = search(index, gallery_rows[10:13], 50)
    assert result.k == 6 and (result.indices >= 0).all()
    np.testing.assert_array_equal(np.sort(result.indices, axis=1), np.tile(np.arange(6), (3, 1)))


@pytest.mark.parametrize("k", [0, -5])
def test_search_refuses_k_below_one_naming_the_value(gallery_rows: np.ndarray, k: int) -> None:
    index = create_index("flat", 8, "l2")
    index.add(gallery_rows)
    for exclude in (None, np.arange(3)):
        with pytest.raises(ValueError, match=rf"k must be at least 1, got {k}\b"):
            search(index, gallery_rows[:3], k, exclude_rows=exclude)


def test_search_refuses_exclude_rows_of_another_length(gallery_rows: np.ndarray) -> None:
    index = create_index("flat", 8, "l2")
    index.add(gallery_rows)
    with pytest.raises(ValueError, match="exclude_rows has 2 entries but there are 3 queries"):
        search(index, gallery_rows[:3], 4, exclude_rows=np.array([0, 1]))
