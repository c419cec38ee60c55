"""Threshold tuning against brute force; the percentile rule and held-out distractors."""

from __future__ import annotations

import numpy as np
import pytest
from open_set_problems import GALLERY_LABELS, QUERY_LABELS, hand_result, random_problem

from lookalike.index.result import SearchResult
from lookalike.search.open_set_scores import (
    accept_reject_f1,
    map_at_k_with_rejection,
    weighted_topk_with_rejection,
)
from lookalike.search.rejection import accepted
from lookalike.search.thresholds import (
    holdout_distractors,
    nearest_positive_scores,
    percentile_threshold,
    tune_threshold,
)


@pytest.mark.parametrize("objective", ["map@5", "map@3", "weighted_topk", "f1"])
@pytest.mark.parametrize("higher_is_better", [True, False])
def test_tuned_threshold_maximises_brute_force_objective(objective, higher_is_better):
    result, query_labels, gallery_labels = random_problem(1, higher_is_better)
    functions = {
        "map@5": lambda t: map_at_k_with_rejection(result, query_labels, gallery_labels, t, 5),
        "map@3": lambda t: map_at_k_with_rejection(result, query_labels, gallery_labels, t, 3),
        "weighted_topk": lambda t: weighted_topk_with_rejection(
            result, query_labels, gallery_labels, t
        ),
        "f1": lambda t: accept_reject_f1(result, query_labels, gallery_labels, t),
    }
    score = functions[objective]
    values = np.unique(result.scores)
    grid = np.concatenate([values, values - 1e-4, values + 1e-4])
    brute_force = max(score(t) for t in grid)
    best, table = tune_threshold(result, query_labels, gallery_labels, objective=objective)
    assert table.shape[1] == 2 and (np.diff(table[:, 0]) > 0).all()
    assert table[:, 1].max() == pytest.approx(brute_force)
    assert score(best) == pytest.approx(brute_force)
    for threshold, value in table[:: max(1, len(table) // 7)]:
        assert score(threshold) == pytest.approx(value)


@pytest.mark.parametrize("higher_is_better", [True, False])
def test_tune_threshold_given_candidates_prefers_the_most_lenient_tie(higher_is_better):
    result = hand_result(higher_is_better)
    sign = 1.0 if higher_is_better else -1.0
    best, table = tune_threshold(
        result,
        QUERY_LABELS,
        GALLERY_LABELS,
        objective="f1",
        candidates=[sign * t for t in (0.92, 0.75, 0.7, 0.1)],
    )
    # 0.1 accepts all (TP 1, FP 2) -> 0.5; 0.7 and 0.75 accept q0, q1 -> 2/3; 0.92 only q1 -> 0.
    expected = [[0.1, 0.5], [0.7, 2 / 3], [0.75, 2 / 3], [0.92, 0.0]]
    expected = expected if higher_is_better else [[-t, v] for t, v in expected[::-1]]
    np.testing.assert_allclose(table, expected, rtol=1e-6)
    assert best == pytest.approx(sign * 0.7)


def test_default_candidates_separate_adjacent_float32_scores():
    low = np.float32(0.5)
    high = np.nextafter(low, np.float32(1.0))
    result = SearchResult(np.array([[high], [low]], dtype=np.float32), np.array([[0], [1]]))
    best, _ = tune_threshold(result, ["a", "z"], ["a", "b"], objective="f1")
    assert accepted(result, best).tolist() == [True, False]


def test_tune_threshold_rejects_unknown_objective():
    result = hand_result()
    with pytest.raises(ValueError, match="valid names: f1, map@k, weighted_topk"):
        tune_threshold(result, QUERY_LABELS, GALLERY_LABELS, objective="recall")


@pytest.mark.parametrize("higher_is_better", [True, False])
def test_percentile_threshold_is_the_strictest_accepting_q_percent(higher_is_better):
    result, query_labels, gallery_labels = random_problem(2, higher_is_better)
    positives = nearest_positive_scores(result, query_labels, gallery_labels)
    for row in range(len(result)):
        row_labels = [gallery_labels[g] for g in result.indices[row]]
        hits = [j for j, label in enumerate(row_labels) if label == query_labels[row]]
        expected = result.scores[row, hits[0]] if hits else np.nan
        np.testing.assert_equal(positives[row], np.float64(expected))
    finite = positives[~np.isnan(positives)]
    threshold = percentile_threshold(positives, q=80, higher_is_better=higher_is_better)
    sign = 1.0 if higher_is_better else -1.0
    accepted_share = np.mean(sign * finite >= sign * threshold)
    assert accepted_share >= 0.8
    stricter = finite[sign * finite > sign * threshold]
    if stricter.size:
        tighter = stricter[np.argmin(sign * stricter)]
        assert np.mean(sign * finite >= sign * tighter) < 0.8


def test_holdout_distractors_removes_whole_classes():
    query_labels = ["a", "b", "c", "d", "a", None, "e"]
    gallery_labels = ["a", "a", "b", "c", "c", "d", "x"]
    keep, held = holdout_distractors(query_labels, gallery_labels, fraction=0.5, seed=3)
    assert len(held) == 2 and set(held) <= {"a", "b", "c", "d"}
    assert keep.tolist() == [label not in held for label in gallery_labels]
    again, held_again = holdout_distractors(query_labels, gallery_labels, fraction=0.5, seed=3)
    assert held_again == held and (again == keep).all()
    everything, _ = holdout_distractors(query_labels, gallery_labels, 1.0)
    assert everything.tolist() == [False] * 6 + [True]
    with pytest.raises(ValueError, match="fraction"):
        holdout_distractors(query_labels, gallery_labels, 1.5)
