"""Bounded-memory ranking: chunks far smaller than the gallery give exactly the naive full-matrix
ranking, rows already prepared are used in place, and the default chunk fits its budget."""

from __future__ import annotations

import numpy as np

from lookalike.index.metrics import get_metric
from lookalike.ranking import rank
from lookalike.ranking.compute import (
    CHUNK_BYTES_PER_SCORE,
    DEFAULT_CHUNK_BYTES,
    _prepare,
    chunk_rows,
)


def test_small_chunks_give_exactly_the_full_matrix_ranking() -> None:
    # integer coordinates: every inner product is an exact integer, so ties are many and real
    rng = np.random.default_rng(7)
    rows = rng.integers(-3, 4, size=(3000, 16)).astype(np.float32)
    labels = np.arange(3000) // 11  # ~11 images per class, as in SOP
    k = 12
    ranking = rank(rows, rows, labels, labels, metric="ip", k=k,
                   exclude_rows=np.arange(3000), chunk_size=37)

    scores = rows.astype(np.int64) @ rows.astype(np.int64).T  # the whole (N, N) matrix
    np.fill_diagonal(scores, -(10**6))  # itself: ranked last, then dropped
    order = np.argsort(-scores, axis=1, kind="stable")[:, :-1]  # equal scores: lower row first
    np.testing.assert_array_equal(ranking.neighbours.indices, order[:, :k])
    np.testing.assert_array_equal(
        ranking.neighbours.scores, np.take_along_axis(scores, order[:, :k], axis=1)
    )
    relevant = labels[order] == labels[:, None]
    queries, places = np.nonzero(relevant)
    np.testing.assert_array_equal(ranking.positive_query, queries)
    np.testing.assert_array_equal(ranking.positive_rank, places + 1)


def test_prepared_rows_are_used_in_place_and_a_shared_gallery_is_prepared_once() -> None:
    rng = np.random.default_rng(1)
    raw = rng.normal(size=(500, 32)).astype(np.float32)
    unit = raw / np.linalg.norm(raw, axis=1, keepdims=True)
    cosine = get_metric("cosine")
    assert _prepare(unit, "rows", cosine) is unit
    assert _prepare(raw, "rows", get_metric("ip")) is raw
    normalised = _prepare(raw, "rows", cosine)
    assert normalised is not raw
    np.testing.assert_allclose(np.linalg.norm(normalised, axis=1), 1.0, atol=1e-6)
    assert _prepare(raw.astype(np.float64), "rows", get_metric("ip")).dtype == np.float32

    labels = np.arange(500) // 5
    shared = rank(unit, unit, labels, labels, k=10, exclude_rows=np.arange(500), chunk_size=64)
    apart = rank(unit, unit.copy(), labels, labels, k=10, exclude_rows=np.arange(500))
    np.testing.assert_array_equal(shared.neighbours.indices, apart.neighbours.indices)
    np.testing.assert_array_equal(shared.positive_rank, apart.positive_rank)
    from_raw = rank(raw, raw, labels, labels, k=10, exclude_rows=np.arange(500))
    np.testing.assert_array_equal(from_raw.neighbours.indices[:, :3], apart.neighbours.indices[:, :3])


def test_default_chunk_fits_its_memory_budget() -> None:
    for gallery in (100, 5000, 60502, 1_000_000):
        rows = chunk_rows(gallery)
        assert 16 <= rows <= 1024
        assert rows == 16 or rows * gallery * CHUNK_BYTES_PER_SCORE <= DEFAULT_CHUNK_BYTES
    assert chunk_rows(100) == 1024 and chunk_rows(60502) == 46
