"""Pure ranking metrics against naive loops and hand-computed examples."""

from __future__ import annotations

import numpy as np
import pytest

from lookalike.metrics import (
    average_precision_from_ranks,
    map_at_k,
    map_at_r,
    precision_at_k,
    r_precision,
    recall_at_k,
    relevance_from_labels,
    remove_junk,
    weighted_topk,
)


def _random_ranking(seed: int, queries: int = 30, width: int = 12) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    matches = rng.random((queries, width)) < 0.3
    matches[0] = False  # a query without any hit
    extra = rng.integers(0, 3, queries)
    num_relevant = np.minimum(matches.sum(1) + extra, width)
    num_relevant[1] = 0
    matches[1] = False  # a query without relevant items at all
    return matches, num_relevant


def _naive_precision_sum(row: list[bool], cutoff: int) -> float:
    hits, total = 0, 0.0
    for i, relevant in enumerate(row[:cutoff]):
        if relevant:
            hits += 1
            total += hits / (i + 1)
    return total


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_metric_matches_a_naive_loop(seed: int) -> None:
    matches, num_relevant = _random_ranking(seed)
    rows = [list(map(bool, row)) for row in matches]
    for k in (1, 3, 5, 12):
        expected_recall = [float(any(row[:k])) for row in rows]
        expected_precision = [sum(row[:k]) / k for row in rows]
        expected_map = [
            _naive_precision_sum(row, k) / min(r, k) if r else 0.0
            for row, r in zip(rows, num_relevant)
        ]
        np.testing.assert_allclose(recall_at_k(matches, k, "none"), expected_recall)
        np.testing.assert_allclose(precision_at_k(matches, k, "none"), expected_precision)
        np.testing.assert_allclose(map_at_k(matches, num_relevant, k, "none"), expected_map)
        assert recall_at_k(matches, k) == pytest.approx(np.mean(expected_recall))
        assert map_at_k(matches, num_relevant, k) == pytest.approx(np.mean(expected_map))
    expected_map_r = [
        _naive_precision_sum(row, r) / r if r else 0.0 for row, r in zip(rows, num_relevant)
    ]
    expected_r_precision = [sum(row[:r]) / r if r else 0.0 for row, r in zip(rows, num_relevant)]
    np.testing.assert_allclose(map_at_r(matches, num_relevant, "none"), expected_map_r)
    np.testing.assert_allclose(r_precision(matches, num_relevant, "none"), expected_r_precision)


def test_map_at_5_hand_computed() -> None:
    matches = np.array(
        [
            [0, 1, 0, 1, 0, 1],  # R=3: (1/2 + 2/4) / 3
            [1, 0, 0, 0, 0, 0],  # R=1: 1
            [0, 0, 1, 0, 0, 0],  # R=1: 1/rank = 1/3
            [0, 0, 0, 0, 0, 1],  # R=1, first hit at rank 6 > 5: 0
            [1, 1, 0, 0, 1, 1],  # R=7 -> min(R, 5)=5: (1 + 1 + 3/5) / 5
        ],
        dtype=bool,
    )
    num_relevant = np.array([3, 1, 1, 1, 7])
    expected = [1 / 3, 1.0, 1 / 3, 0.0, 2.6 / 5]
    np.testing.assert_allclose(map_at_k(matches, num_relevant, 5, "none"), expected)
    assert map_at_k(matches, num_relevant, 5) == pytest.approx(np.mean(expected))


def test_weighted_topk_is_the_competition_formula() -> None:
    matches, _ = _random_ranking(3)
    acc = {k: np.mean([any(row[:k]) for row in matches]) for k in (1, 5, 10)}
    assert weighted_topk(matches) == pytest.approx(600 * acc[1] + 300 * acc[5] + 100 * acc[10])
    assert weighted_topk(matches, {2: 1.0, 3: 2.0}) == pytest.approx(
        np.mean([any(row[:2]) for row in matches]) + 2 * np.mean([any(row[:3]) for row in matches])
    )
    perfect = np.ones((4, 10), dtype=bool)
    assert weighted_topk(perfect) == pytest.approx(1000.0)


def test_average_precision_from_ranks() -> None:
    expected = (1 + 2 / 3 + 3 / 6) / 3
    assert average_precision_from_ranks(np.array([6, 1, 3])) == pytest.approx(expected)
    assert average_precision_from_ranks(np.array([], dtype=int)) == 0.0
    rng = np.random.default_rng(0)
    for _ in range(20):
        row = rng.random(25) < 0.3
        if not row.any():
            continue
        expected = _naive_precision_sum(list(row), 25) / row.sum()
        assert average_precision_from_ranks(np.flatnonzero(row) + 1) == pytest.approx(expected)
    with pytest.raises(ValueError, match="distinct"):
        average_precision_from_ranks(np.array([2, 2]))


def test_remove_junk_moves_later_items_up() -> None:
    matches = np.array([[0, 1, 1, 0, 1], [1, 0, 0, 1, 0]], dtype=bool)
    junk = np.array([[0, 1, 0, 0, 0], [1, 0, 0, 0, 0]], dtype=bool)
    expected = np.array([[0, 1, 0, 1, 0], [0, 0, 1, 0, 0]], dtype=bool)
    np.testing.assert_array_equal(remove_junk(matches, junk), expected)


def test_relevance_from_labels_removes_self_and_padding() -> None:
    gallery_labels = ["a", "b", "a", "c", "a"]
    query_labels = ["a", "c", "z"]
    retrieved = np.array([[0, 2, 1], [3, 1, -1], [1, 0, 4]])
    matches, num_relevant = relevance_from_labels(retrieved, query_labels, gallery_labels)
    np.testing.assert_array_equal(matches, [[1, 1, 0], [1, 0, 0], [0, 0, 0]])
    np.testing.assert_array_equal(num_relevant, [3, 1, 0])
    matches, num_relevant = relevance_from_labels(
        retrieved, query_labels, gallery_labels, self_index=np.array([0, 3, -1])
    )
    np.testing.assert_array_equal(matches, [[1, 0, 0], [0, 0, 0], [0, 0, 0]])
    np.testing.assert_array_equal(num_relevant, [2, 0, 0])


def test_bad_input_raises_clear_errors() -> None:
    matches, num_relevant = _random_ranking(0, width=4)
    with pytest.raises(ValueError, match="exceeds the 4 retrieved"):
        recall_at_k(matches, 5)
    with pytest.raises(ValueError, match="positive integer"):
        precision_at_k(matches, 0)
    with pytest.raises(ValueError, match="shape"):
        map_at_k(matches, num_relevant[:-1], 2)
    with pytest.raises(ValueError, match="retrieve at least max"):
        map_at_r(matches, num_relevant + 1)
    with pytest.raises(ValueError, match="more relevant items"):
        map_at_k(np.ones((1, 3), bool), np.array([1]), 3)
    with pytest.raises(ValueError, match="valid names"):
        recall_at_k(matches, 1, reduction="sum")  # type: ignore[arg-type]
