"""Review: ties, float32 rounding, the query's own image and chunk boundaries.

The ranking breaks exact ties by gallery row (lower first; documented in
:mod:`lookalike.ranking.compute`). Here: duplicate gallery rows really tie in float32 under every
metric, also where ``torch.cdist`` takes its matrix-product path (more than 25 rows), so a tie
between a positive and a negative is settled by the row and nothing else; chunking continuous
(not integer) data changes nothing; the own row is never counted or returned, while a duplicate
of the query under another row is an ordinary relevant item.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lookalike.index.metrics import get_metric
from lookalike.metrics import retrieval_metrics
from lookalike.ranking import rank


@pytest.mark.parametrize("metric", ["cosine", "ip", "l2", "l1"])
def test_duplicate_rows_tie_exactly_and_the_lower_row_ranks_first(metric: str) -> None:
    rng = np.random.default_rng(0)
    gallery = rng.normal(size=(200, 16)).astype(np.float32)
    labels = np.arange(200) % 20
    queries = gallery[:30] + 0.05 * rng.normal(size=(30, 16)).astype(np.float32)
    # row 150 copies row 0 (a negative for query 0 once relabelled), row 151 copies row 1
    gallery[150], gallery[151] = gallery[0], gallery[1]
    labels[150], labels[151] = 7, labels[1]
    for chunk in (1, 30):
        ranking = rank(
            queries, gallery, labels[:30], labels, metric=metric, k=200, chunk_size=chunk
        )
        indices, scores = ranking.neighbours.indices, ranking.neighbours.scores
        for q in range(30):
            place = {int(g): i for i, g in enumerate(indices[q])}
            for original, copy in ((0, 150), (1, 151)):
                assert scores[q, place[original]] == scores[q, place[copy]]
                assert place[copy] == place[original] + 1  # equal score: gallery order
        # query 0: its near copy (row 0) first, the relabelled duplicate (a negative) second
        assert indices[0, :2].tolist() == [0, 150]
        assert ranking.first_positive_rank[0] == 1
    # swap the roles: the negative duplicate now sits at the lower row and wins the tie
    labels[0], labels[150] = 7, 0
    swapped = rank(queries, gallery, np.r_[0, labels[1:30]], labels, metric=metric, k=5)
    assert swapped.first_positive_rank[0] == 2
    assert retrieval_metrics(swapped.select(np.array([0])), ks=(1, 2)).summary["recall@1"] == 0.0


@pytest.mark.parametrize("metric", ["cosine", "ip", "l2", "l1"])
def test_chunking_continuous_data_changes_no_rank(metric: str) -> None:
    rng = np.random.default_rng(1)
    rows = rng.normal(size=(301, 24)).astype(np.float32)
    labels = rng.integers(0, 25, 301)
    exclude = np.arange(301)
    exclude[::7] = -1  # some queries have no own row
    junk = [rng.choice(301, 3, replace=False) for _ in range(301)]
    results = [
        rank(
            rows,
            rows,
            labels,
            labels,
            metric=metric,
            k=15,
            exclude_rows=exclude,
            junk=junk,
            chunk_size=chunk,
        )
        for chunk in (1, 16, 17, 100, 301)  # boundaries inside, at and past the query set
    ]
    for other in results[1:]:
        np.testing.assert_array_equal(other.neighbours.indices, results[0].neighbours.indices)
        np.testing.assert_array_equal(other.positive_query, results[0].positive_query)
        np.testing.assert_array_equal(other.positive_rank, results[0].positive_rank)
        # Scores may move by a float32 rounding between matrix-product shapes, no more. For l2,
        # torch.cdist (as FAISS) expands |x|^2 + |y|^2 - 2xy: the rounding is in the squared
        # distance, so a query's distance to itself comes out anywhere in [0, ~4e-3] here.
        ours, theirs = other.neighbours.scores, results[0].neighbours.scores
        if metric == "l2":
            ours, theirs = ours.astype(np.float64) ** 2, theirs.astype(np.float64) ** 2
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-4)


def test_own_row_versus_a_duplicate_of_the_query_and_r() -> None:
    """R drops by one only where the own row is in the gallery and shares the query's label."""
    rng = np.random.default_rng(2)
    gallery = rng.normal(size=(12, 4)).astype(np.float32)
    gallery[5] = gallery[0]  # the same picture under another id: a true relevant item
    labels = ["a", "b", "a", "b", "a", "a", "b", "c", "c", "a", "b", "c"]
    query_labels = ["a", "a", "c", "b"]
    own = np.array([0, 1, -1, 4])  # query 1's own row is labelled "b", query 3's "a"
    ranking = rank(
        gallery[[0, 1, 7, 4]], gallery, query_labels, labels, metric="l2", k=12, exclude_rows=own
    )
    assert ranking.num_relevant.tolist() == [4, 5, 3, 4]  # "a": 5 items, "b": 4, "c": 3
    for q, row in enumerate(own):
        assert row not in ranking.neighbours.indices[q]  # never returned
        kept = [g for g in ranking.neighbours.indices[q].tolist() if g >= 0]
        assert len(kept) == 12 - (row >= 0)
    assert ranking.neighbours.indices[0, 0] == 5  # the duplicate is first and counted
    assert ranking.first_positive_rank[0] == 1


def test_tiny_galleries_against_a_naive_sort_of_the_same_float32_scores() -> None:
    """Galleries of 1-8 items with heavy ties, None labels, own rows, junk covering everything,
    k past the gallery, chunks of 1-4: the ranks and lists of a plain sort of each query's
    float32 scores (equal scores in gallery order)."""
    rng = np.random.default_rng(11)
    for trial in range(150):
        metric = ("ip", "l2", "l1", "cosine")[trial % 4]
        num_gallery, num_queries = int(rng.integers(1, 9)), int(rng.integers(1, 7))
        gallery = rng.integers(-1, 2, (num_gallery, 2)).astype(np.float32)
        queries = rng.integers(-1, 2, (num_queries, 2)).astype(np.float32)
        if metric == "cosine":  # no zero rows under cosine
            gallery[(gallery == 0).all(axis=1)] = 1
            queries[(queries == 0).all(axis=1)] = 1
        gallery_labels = [
            None if rng.random() < 0.2 else int(rng.integers(0, 3)) for _ in range(num_gallery)
        ]
        query_labels = [
            None if rng.random() < 0.2 else int(rng.integers(0, 3)) for _ in range(num_queries)
        ]
        own = rng.integers(-1, num_gallery, num_queries) if trial % 3 else None
        junk = (
            [
                rng.choice(num_gallery, rng.integers(0, num_gallery + 1), replace=False)
                for _ in range(num_queries)
            ]
            if trial % 2
            else None
        )
        k = int(rng.integers(1, 11))
        ranking = rank(
            queries,
            gallery,
            query_labels,
            gallery_labels,
            metric=metric,
            k=k,
            exclude_rows=own,
            junk=junk,
            chunk_size=int(rng.integers(1, 5)),
        )
        resolved = get_metric(metric)  # the float32 scores the ranking sorts
        scores = resolved.pairwise(
            torch.from_numpy(resolved.prepare(queries)), torch.from_numpy(resolved.prepare(gallery))
        ).numpy()
        for q in range(num_queries):
            key = -scores[q] if resolved.higher_is_better else scores[q]
            dropped = set() if junk is None else set(junk[q].tolist())
            if own is not None and own[q] >= 0:
                dropped.add(int(own[q]))
            order = [
                g for g in sorted(range(num_gallery), key=lambda g: (key[g], g)) if g not in dropped
            ]
            assert ranking.neighbours.indices[q].tolist() == (order + [-1] * k)[:k], trial
            expected = [
                place + 1
                for place, g in enumerate(order)
                if query_labels[q] is not None and gallery_labels[g] == query_labels[q]
            ]
            assert ranking.positive_rank[ranking.positive_query == q].tolist() == expected, trial


def test_l2_exact_duplicate_ranks_before_a_near_copy() -> None:
    rng = np.random.default_rng(0)
    gallery = 3 * rng.normal(size=(300, 64)).astype(np.float32)  # norms ~24
    offsets = rng.normal(size=(100, 64)) * 2e-3 / 8  # near copies ~0.002 away
    gallery[200:300] = gallery[:100] + offsets.astype(np.float32)
    labels = np.arange(300)
    labels[200:300] += 1000  # each near copy is a negative
    ranking = rank(gallery[:100].copy(), gallery, labels[:100], labels, metric="l2", k=2)
    # truth (float64): each query's exact duplicate (distance 0) is first: recall@1 = 1
    # (torch.cdist's matmul expansion gave 0.62-0.65 depending on the chunk size; FAISS 1.0)
    assert (ranking.first_positive_rank == 1).mean() == 1.0
