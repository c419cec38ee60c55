"""Open-set rejection against hand-computed examples, naive loops, brute force and sklearn."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_curve

from lookalike.search.rejection import (
    NO_MATCH,
    accept_reject_f1,
    accepted,
    apply_threshold,
    fnmr_at_fmr,
    holdout_distractors,
    map_at_k_with_rejection,
    nearest_positive_scores,
    open_set_roc,
    percentile_threshold,
    ranked_with_no_match,
    tune_threshold,
    weighted_topk_with_rejection,
)
from lookalike.search.result import SearchResult

GALLERY_LABELS = ["a", "b", "c", "a"]
QUERY_LABELS = ["a", None, "z"]


def _hand_result(higher_is_better: bool = True) -> SearchResult:
    scores = np.array([[0.9, 0.8, 0.6, 0.3], [0.95, 0.6, 0.5, 0.2], [0.5, 0.4, 0.3, 0.2]])
    indices = np.array([[1, 0, 2, 3], [2, 0, 1, 3], [0, 3, 1, 2]])
    return SearchResult(scores if higher_is_better else -scores, indices, higher_is_better)


def _random_problem(seed: int, higher_is_better: bool) -> tuple[SearchResult, list, list]:
    rng = np.random.default_rng(seed)
    gallery_labels = rng.integers(0, 6, 30).tolist()
    query_labels = [None if label == 8 else label for label in rng.integers(0, 9, 40).tolist()]
    centres = rng.normal(size=(8, 5))
    gallery = centres[gallery_labels] + rng.normal(size=(30, 5))
    queries = centres[[7 if label is None else label for label in query_labels]]
    queries = queries + rng.normal(size=(40, 5))
    scores = queries @ gallery.T if higher_is_better else -(queries @ gallery.T) + 10.0
    order = np.argsort(-scores if higher_is_better else scores, axis=1)[:, :10]
    return (
        SearchResult(np.take_along_axis(scores, order, 1), order, higher_is_better),
        query_labels,
        gallery_labels,
    )


def _naive_apk(actual: set, predicted: list, k: int) -> float:
    """Kaggle's ``apk`` (ml_metrics)."""
    score, hits = 0.0, 0
    for i, item in enumerate(predicted[:k]):
        if item in actual and item not in predicted[:i]:
            hits += 1
            score += hits / (i + 1.0)
    return score / min(len(actual), k)


def _answers(query_labels: list, gallery_labels: list) -> list[set]:
    return [
        {row for row, label in enumerate(gallery_labels) if label == query}
        or {NO_MATCH}
        for query in query_labels
    ]


def test_apply_threshold_hand_examples():
    similarities = SearchResult(np.array([[0.9, 0.7, 0.4]]), np.array([[4, 2, 7]]))
    assert apply_threshold(similarities, 0.5).tolist() == [2]
    assert apply_threshold(similarities, 0.95).tolist() == [0]
    assert apply_threshold(similarities, 0.7).tolist() == [2]
    assert apply_threshold(similarities, 0.1).tolist() == [3]
    distances = SearchResult(np.array([[0.1, 0.3, 0.6]]), np.array([[4, 2, 7]]), False)
    assert apply_threshold(distances, 0.5).tolist() == [2]
    assert accepted(distances, 0.05).tolist() == [False]
    padded = SearchResult(np.array([[0.9, -np.inf]]), np.array([[4, -1]]))
    assert apply_threshold(padded, -1e30).tolist() == [1]


def test_ranked_with_no_match_inserts_and_truncates():
    scores = np.array([[0.9, 0.7, 0.4], [0.3, -np.inf, -np.inf]])
    result = SearchResult(scores, np.array([[3, 1, 0], [5, -1, -1]]))
    assert ranked_with_no_match(result, 0.5, 5) == [[3, 1, NO_MATCH, 0], [NO_MATCH, 5]]
    assert ranked_with_no_match(result, 0.5, 2) == [[3, 1], [NO_MATCH, 5]]
    assert ranked_with_no_match(result, 0.2, 3) == [[3, 1, 0], [5, NO_MATCH]]


@pytest.mark.parametrize("higher_is_better", [True, False])
def test_map_and_weighted_topk_hand_computed(higher_is_better):
    result = _hand_result(higher_is_better)
    threshold = 0.7 if higher_is_better else -0.7
    # q0 (genuine "a", 2 relevant): [b, a, NM, c, a] -> (1/2 + 2/5) / 2; q1 (None): NM at rank 2;
    # q2 ("z" is not in the gallery): NM first.
    expected = ((0.5 + 0.4) / 2 + 0.5 + 1.0) / 3
    value = map_at_k_with_rejection(result, QUERY_LABELS, GALLERY_LABELS, threshold, k=5)
    assert value == pytest.approx(expected)
    weighted = weighted_topk_with_rejection(
        result, QUERY_LABELS, GALLERY_LABELS, threshold, weights={1: 1.0, 2: 10.0}
    )
    assert weighted == pytest.approx((10.0 + 10.0 + 11.0) / 3)
    # Accepted: q0 and q1 (top-1 0.9, 0.95); genuine: q0 only -> TP 1, FP 1, FN 0.
    assert accept_reject_f1(result, QUERY_LABELS, GALLERY_LABELS, threshold) == pytest.approx(2 / 3)


@pytest.mark.parametrize("higher_is_better", [True, False])
def test_metrics_match_naive_loops(higher_is_better):
    result, query_labels, gallery_labels = _random_problem(0, higher_is_better)
    answers = _answers(query_labels, gallery_labels)
    genuine = np.array([NO_MATCH not in answer for answer in answers])
    assert 0 < genuine.sum() < len(genuine)
    for threshold in np.quantile(result.scores[:, :3], [0.1, 0.5, 0.9]):
        lists = ranked_with_no_match(result, threshold, 10)
        naive_map = np.mean([_naive_apk(a, p, 5) for a, p in zip(answers, lists)])
        got = map_at_k_with_rejection(result, query_labels, gallery_labels, threshold, k=5)
        assert got == pytest.approx(naive_map)
        weights = {1: 600, 5: 300, 10: 100}
        naive_weighted = np.mean(
            [
                sum(w * bool(answer & set(ranked[:k])) for k, w in weights.items())
                for answer, ranked in zip(answers, lists)
            ]
        )
        got = weighted_topk_with_rejection(result, query_labels, gallery_labels, threshold)
        assert got == pytest.approx(naive_weighted)
        accepts = np.array([p[0] != NO_MATCH for p in lists])
        tp, fp = (accepts & genuine).sum(), (accepts & ~genuine).sum()
        fn = (~accepts & genuine).sum()
        got = accept_reject_f1(result, query_labels, gallery_labels, threshold)
        assert got == pytest.approx(2 * tp / (2 * tp + fp + fn))


@pytest.mark.parametrize("objective", ["map@5", "map@3", "weighted_topk", "f1"])
@pytest.mark.parametrize("higher_is_better", [True, False])
def test_tuned_threshold_maximises_brute_force_objective(objective, higher_is_better):
    result, query_labels, gallery_labels = _random_problem(1, higher_is_better)
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
    result = _hand_result(higher_is_better)
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
    result = _hand_result()
    with pytest.raises(ValueError, match="valid names: map@K"):
        tune_threshold(result, QUERY_LABELS, GALLERY_LABELS, objective="recall")


@pytest.mark.parametrize("higher_is_better", [True, False])
def test_percentile_threshold_is_the_strictest_accepting_q_percent(higher_is_better):
    result, query_labels, gallery_labels = _random_problem(2, higher_is_better)
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


@pytest.mark.parametrize("higher_is_better", [True, False])
def test_open_set_roc_matches_sklearn(higher_is_better):
    result, query_labels, gallery_labels = _random_problem(3, higher_is_better)
    genuine = np.array([label in set(gallery_labels) for label in query_labels])
    goodness = result.scores[:, 0] if higher_is_better else -result.scores[:, 0]
    fpr, tpr, thresholds = roc_curve(genuine, goodness, drop_intermediate=False)
    fmr, tmr, ours = open_set_roc(result, query_labels, gallery_labels)
    np.testing.assert_allclose(fmr, fpr)
    np.testing.assert_allclose(tmr, tpr)
    np.testing.assert_allclose(ours[1:], thresholds[1:] if higher_is_better else -thresholds[1:])


@pytest.mark.parametrize("higher_is_better", [True, False])
def test_fnmr_at_fmr_matches_exhaustive_search(higher_is_better):
    result, query_labels, gallery_labels = _random_problem(4, higher_is_better)
    genuine = np.array([label in set(gallery_labels) for label in query_labels])
    sign = 1.0 if higher_is_better else -1.0
    top1 = sign * result.scores[:, 0].astype(np.float64)
    for point in fnmr_at_fmr(result, query_labels, gallery_labels, (0.0, 0.1, 0.25, 1.0)):
        feasible = []
        for level in np.concatenate([np.unique(top1), [np.inf]]):
            fmr = np.mean(top1[~genuine] >= level)
            if fmr <= point.target_fmr:
                feasible.append((np.mean(top1[genuine] < level), fmr))
        best_fnmr, neg_fmr = min((fnmr, -fmr) for fnmr, fmr in feasible)  # the most lenient
        best_fmr = -neg_fmr
        assert point.fnmr == pytest.approx(best_fnmr)
        assert point.fmr == pytest.approx(best_fmr) and point.fmr <= point.target_fmr
        accepts = accepted(result, point.threshold)
        assert np.mean(accepts[~genuine]) == pytest.approx(point.fmr)
        assert np.mean(~accepts[genuine]) == pytest.approx(point.fnmr)
