"""Review: ``Ranking.select`` with repeated rows (a bootstrap sample of the queries).

Before the fix a repeated row kept its relevant items in its last copy only: ``select([0, 0])``
reported one of the two copies as a query without positives, so a bootstrap over queries
(or ``skip_queries_without_positives=False``) read wrong numbers, exit 0.
The reference is ranking the resampled queries themselves.
"""

from __future__ import annotations

import numpy as np
import pytest

from lookalike.metrics import retrieval_metrics
from lookalike.ranking import rank


def test_select_with_repeats_equals_ranking_the_resampled_queries() -> None:
    rng = np.random.default_rng(0)
    gallery = rng.normal(size=(60, 5)).astype(np.float32)
    labels = rng.integers(0, 6, 60)
    exclude = np.arange(60)
    full = rank(
        gallery, gallery, labels, labels, metric="l2", k=8, exclude_rows=exclude, chunk_size=9
    )
    rows = rng.choice(60, 80, replace=True)  # a bootstrap sample: many rows repeat
    rows[:3] = [5, 5, 5]
    assert len(np.unique(rows)) < len(rows)
    part = full.select(rows)
    direct = rank(
        gallery[rows], gallery, labels[rows], labels, metric="l2", k=8, exclude_rows=exclude[rows]
    )
    np.testing.assert_array_equal(part.positive_query, direct.positive_query)
    np.testing.assert_array_equal(part.positive_rank, direct.positive_rank)
    np.testing.assert_array_equal(part.neighbours.indices, direct.neighbours.indices)
    np.testing.assert_array_equal(part.exclude_rows, exclude[rows])
    for skip in (True, False):
        ours = retrieval_metrics(part, skip_queries_without_positives=skip).summary
        assert ours == retrieval_metrics(direct, skip_queries_without_positives=skip).summary
    # Before: {'n_queries': 2, 'n_queries_without_positives': 1, ...} for the same query twice.
    twice = retrieval_metrics(full.select(np.array([5, 5]))).summary
    once = retrieval_metrics(full.select(np.array([5]))).summary
    assert twice["n_queries_without_positives"] == 0
    assert {k: v for k, v in twice.items() if k != "n_queries"} == {
        k: v for k, v in once.items() if k != "n_queries"
    }


def test_select_keeps_order_and_refuses_rows_outside() -> None:
    vectors = np.eye(6, dtype=np.float32)
    labels = [0, 0, 1, 1, 2, 2]
    ranking = rank(vectors, vectors, labels, labels, k=3, exclude_rows=np.arange(6))
    part = ranking.select(np.array([4, 1]))
    assert part.codes.query.tolist() == [ranking.codes.query[4], ranking.codes.query[1]]
    assert part.num_relevant.tolist() == [1, 1]
    assert ranking.select(np.array([], dtype=np.int64)).num_queries == 0
    with pytest.raises(ValueError, match=r"\[0, 6\)"):
        ranking.select(np.array([6]))
