"""Review of the open-set code against independent references: naive loops over thresholds,
Kaggle's ``apk``, sklearn's ROC; all-vs-all searches, ties, NaN, padding and empty inputs."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score, roc_curve

from lookalike.index.result import SearchResult
from lookalike.search.open_set_scores import (
    accept_reject_f1,
    fnmr_at_fmr,
    map_at_k_with_rejection,
    open_set_roc,
    relevance,
    weighted_topk_with_rejection,
)
from lookalike.search.rejection import apply_threshold
from lookalike.search.threshold_rules import apply_rule, roc_corner_threshold
from lookalike.search.thresholds import holdout_distractors, percentile_threshold, tune_threshold
from naive_metrics import kaggle_apk

NO_MATCH = "no match"


def naive_percentile(scores: np.ndarray, q: float, higher_is_better: bool) -> float:
    """Walk the observed scores from most lenient to strictest; keep the last accepting q%."""
    sign = 1.0 if higher_is_better else -1.0
    kept = None
    for threshold in sorted(set(scores.tolist()), key=lambda value: sign * value):
        if 100.0 * np.mean(sign * scores >= sign * threshold) >= q - 1e-9:
            kept = threshold
    return kept


def test_percentile_hand_example() -> None:
    scores = np.arange(1, 11) / 10.0  # 0.1 .. 1.0
    # Accepting 8 of 10 similarities needs >= 0.3; 0.2 accepts 9 (np.percentile "lower" gave 0.2).
    assert percentile_threshold(scores, 80.0, True) == pytest.approx(0.3)
    # Distances: <= 0.8 accepts 8 of 10; 0.9 accepts 9.
    assert percentile_threshold(scores, 80.0, False) == pytest.approx(0.8)


@pytest.mark.parametrize("higher_is_better", [True, False])
def test_percentile_matches_a_naive_loop_with_ties(higher_is_better: bool) -> None:
    rng = np.random.default_rng(0)
    for size in range(1, 30):
        scores = rng.integers(0, 12, size) / 4.0  # many ties
        for q in (0.0, 10.0, 25.0, 50.0, 70.0, 80.0, 90.0, 95.0, 100.0):
            expected = naive_percentile(scores, q, higher_is_better)
            assert percentile_threshold(scores, q, higher_is_better) == expected, (size, q)


def test_percentile_ignores_nan_and_refuses_empty_input() -> None:
    assert percentile_threshold(np.array([np.nan, 0.5, 0.7]), 50.0) == pytest.approx(0.7)
    with pytest.raises(ValueError, match="no nearest-positive scores"):
        percentile_threshold(np.array([np.nan]), 50.0)
    with pytest.raises(ValueError, match="q must be a percentage"):
        percentile_threshold(np.array([0.5]), 101.0)


# An all-vs-all search: every query is also a gallery image, its own row left out of its list.
LABELS = ["a", "a", "b", "b", "b", "c", None, None, "d", "d"]  # "c" is a singleton


def all_vs_all(higher_is_better: bool, seed: int = 0, k: int = 4) -> tuple[SearchResult, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = {label: rng.normal(size=4) * 2 for label in set(LABELS)}
    points = np.stack([centres[label] + 0.8 * rng.normal(size=4) for label in LABELS])
    if higher_is_better:
        scores = points @ points.T
        np.fill_diagonal(scores, -np.inf)
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    else:
        scores = np.sqrt(((points[:, None] - points[None]) ** 2).sum(-1))
        np.fill_diagonal(scores, np.inf)
        order = np.argsort(scores, axis=1, kind="stable")[:, :k]
    result = SearchResult(np.take_along_axis(scores, order, 1), order, higher_is_better)
    return result, np.arange(len(LABELS))


def naive_lists(result: SearchResult, threshold: float) -> list[list]:
    level = float(np.float32(threshold))
    lists = []
    for scores, rows in zip(result.scores.tolist(), result.indices.tolist()):
        kept = [s >= level if result.higher_is_better else s <= level for s in scores]
        kept = [keep and not np.isnan(s) and row >= 0 for keep, s, row in zip(kept, scores, rows)]
        cut = kept.index(False) if False in kept else len(rows)
        lists.append([*rows[:cut], NO_MATCH, *rows[cut:]])
    return lists


def naive_answers(labels: list, gallery_labels: list, own_rows: np.ndarray | None) -> list[set]:
    answers = []
    for query, label in enumerate(labels):
        own = -1 if own_rows is None else own_rows[query]
        rows = {
            row for row, other in enumerate(gallery_labels)
            if label is not None and other == label and row != own
        }
        answers.append(rows or {NO_MATCH})
    return answers


def naive_objectives(result: SearchResult, own_rows: np.ndarray | None, threshold: float) -> dict:
    lists = naive_lists(result, threshold)
    answers = naive_answers(LABELS, LABELS, own_rows)
    genuine = np.array([NO_MATCH not in answer for answer in answers])
    accepts = np.array([ranked[0] != NO_MATCH for ranked in lists])
    tp, fp, fn = (accepts & genuine).sum(), (accepts & ~genuine).sum(), (~accepts & genuine).sum()
    weights = {1: 600, 3: 300, 4: 100}
    return {
        "map@3": np.mean([kaggle_apk(a, p, 3) for a, p in zip(answers, lists)]),
        "weighted_topk": np.mean([
            sum(w * bool(answer & set(ranked[:k])) for k, w in weights.items())
            for answer, ranked in zip(answers, lists)
        ]),
        "f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0,
    }


@pytest.mark.parametrize("higher_is_better", [True, False])
def test_all_vs_all_objectives_leave_out_the_query_own_image(higher_is_better: bool) -> None:
    result, own_rows = all_vs_all(higher_is_better)
    weights = {1: 600, 3: 300, 4: 100}
    for threshold in np.quantile(result.scores[:, 0], [0.0, 0.3, 0.6, 1.0]):
        naive = naive_objectives(result, own_rows, threshold)
        got = {
            "map@3": map_at_k_with_rejection(result, LABELS, LABELS, threshold, 3, own_rows),
            "weighted_topk": weighted_topk_with_rejection(
                result, LABELS, LABELS, threshold, weights, own_rows
            ),
            "f1": accept_reject_f1(result, LABELS, LABELS, threshold, own_rows),
        }
        for name, value in got.items():
            assert value == pytest.approx(naive[name]), (name, threshold)
    table = relevance(result, LABELS, LABELS, 1, own_rows)
    # The singleton "c" has no other image: a distractor; "a" has one right answer, not two.
    assert table.genuine.tolist() == [True] * 5 + [False, False, False, True, True]
    assert table.num_relevant.tolist() == [1, 1, 2, 2, 2, 1, 1, 1, 1, 1]


@pytest.mark.parametrize("objective", ["map@3", "weighted_topk", "f1"])
@pytest.mark.parametrize("higher_is_better", [True, False])
def test_all_vs_all_tuning_maximises_the_naive_objective(objective: str, higher_is_better: bool) -> None:
    result, own_rows = all_vs_all(higher_is_better, seed=1)
    weights = {1: 600, 3: 300, 4: 100}
    values = np.unique(result.scores)
    grid = np.concatenate([values, values - 1e-4, values + 1e-4])
    brute_force = max(naive_objectives(result, own_rows, t)[objective] for t in grid)
    best, _ = tune_threshold(
        result, LABELS, LABELS, objective, weights=weights, exclude_rows=own_rows
    )
    assert naive_objectives(result, own_rows, best)[objective] == pytest.approx(brute_force)
    rule = apply_rule("tuned", result, LABELS, LABELS, objective=objective, weights=weights,
                      exclude_rows=own_rows)
    assert rule == best


@pytest.mark.parametrize("higher_is_better", [True, False])
def test_all_vs_all_roc_counts_a_singleton_class_as_a_distractor(higher_is_better: bool) -> None:
    result, own_rows = all_vs_all(higher_is_better, seed=2)
    genuine = np.array([NO_MATCH not in a for a in naive_answers(LABELS, LABELS, own_rows)])
    goodness = result.scores[:, 0] if higher_is_better else -result.scores[:, 0]
    fpr, tpr, _ = roc_curve(genuine, goodness, drop_intermediate=False)
    fmr, tmr, _ = open_set_roc(result, LABELS, LABELS, own_rows)
    np.testing.assert_allclose(fmr, fpr)
    np.testing.assert_allclose(tmr, tpr)
    point = fnmr_at_fmr(result, LABELS, LABELS, (0.34,), own_rows)[0]
    accepted = apply_threshold(result, point.threshold) > 0
    assert point.fmr == pytest.approx(accepted[~genuine].mean()) and point.fmr <= 0.34
    corner = roc_corner_threshold(result, LABELS, LABELS, own_rows)
    assert corner == apply_rule("roc_corner", result, LABELS, LABELS, exclude_rows=own_rows)


def test_exclude_rows_that_do_not_fit_are_refused() -> None:
    result, own_rows = all_vs_all(True)
    with pytest.raises(ValueError, match=r"one integer gallery row per query \(10,\)"):
        relevance(result, LABELS, LABELS, 1, own_rows[:3])
    with pytest.raises(ValueError, match=r"exclude_rows must lie in \[-1, 10\)"):
        relevance(result, LABELS, LABELS, 1, own_rows + 5)
    listed = own_rows.copy()
    listed[0] = result.indices[0, 0]
    with pytest.raises(ValueError, match="query 0's list holds its excluded gallery row"):
        relevance(result, LABELS, LABELS, 1, listed)


@pytest.mark.parametrize("higher_is_better", [True, False])
def test_threshold_beyond_float32_range_never_accepts_padding(higher_is_better: bool) -> None:
    sign = 1.0 if higher_is_better else -1.0
    padded = SearchResult(np.array([[sign * 0.9, np.nan]]), np.array([[4, -1]]), higher_is_better)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert apply_threshold(padded, -sign * 1e39).tolist() == [1]
        assert apply_threshold(padded, sign * 1e39).tolist() == [0]


@pytest.mark.parametrize("higher_is_better", [True, False])
def test_a_threshold_exactly_at_a_score_accepts_it(higher_is_better: bool) -> None:
    scores = np.array([[0.3, 0.3, 0.7]], dtype=np.float32)
    if higher_is_better:
        scores = scores[:, ::-1].copy()
    result = SearchResult(scores, np.array([[0, 1, 2]]), higher_is_better)
    assert apply_threshold(result, 0.3).tolist() == ([3] if higher_is_better else [2])
    stricter = np.nextafter(np.float32(0.3), np.float32(1.0 if higher_is_better else 0.0))
    assert apply_threshold(result, float(stricter)).tolist() == ([1] if higher_is_better else [0])


def test_f1_tuning_without_a_genuine_query_is_an_error() -> None:
    result = SearchResult(np.array([[0.9], [0.5]]), np.array([[0], [0]]))
    with pytest.raises(ValueError, match="f1 objective needs a genuine query"):
        tune_threshold(result, [None, "z"], ["a"], "f1")
    # MAP@K sees that rejecting every distractor is right.
    best, _ = tune_threshold(result, [None, "z"], ["a"], "map@1")
    assert (apply_threshold(result, best) == 0).all()


def test_tuning_refuses_a_result_without_finite_scores() -> None:
    empty = SearchResult(np.zeros((0, 3)), np.zeros((0, 3)))
    with pytest.raises(ValueError, match="no finite scores"):
        tune_threshold(empty, [], ["a"], "map@3")
    nan = SearchResult(np.full((2, 1), np.nan), np.array([[0], [0]]))
    with pytest.raises(ValueError, match="no finite scores"):
        tune_threshold(nan, ["a", None], ["a"], "map@1")


def test_roc_corner_without_a_finite_top1_score_is_a_clear_error() -> None:
    padded = SearchResult(np.full((3, 2), np.nan), np.full((3, 2), -1))
    with pytest.raises(ValueError, match="no query has a finite top-1 score"):
        roc_corner_threshold(padded, ["a", None, "a"], ["a"])
    with pytest.raises(ValueError, match="both genuine and distractor"):
        roc_corner_threshold(padded, ["a", "a", "a"], ["a"])


def sklearn_roc_corner(genuine: np.ndarray, goodness: np.ndarray) -> float:
    """sklearn's ROC points; the closest to (0, 1), the most lenient (last) among ties."""
    fpr, tpr, thresholds = roc_curve(genuine, goodness, drop_intermediate=False)
    distance = fpr**2 + (1 - tpr) ** 2
    return float(thresholds[np.flatnonzero(np.isclose(distance, distance.min()))[-1]])


@pytest.mark.parametrize("higher_is_better", [True, False])
def test_roc_corner_with_tied_scores_matches_sklearn(higher_is_better: bool) -> None:
    rng = np.random.default_rng(3)
    for _ in range(60):
        size = int(rng.integers(3, 16))
        genuine = rng.random(size) < 0.5
        genuine[:2] = [True, False]
        goodness = rng.integers(0, 5, size) / 4.0  # heavy ties
        scores = (goodness if higher_is_better else 2.0 - goodness)[:, None]
        result = SearchResult(scores, np.zeros((size, 1), dtype=np.int64), higher_is_better)
        labels = ["a" if flag else None for flag in genuine]
        expected = sklearn_roc_corner(genuine, goodness)
        got = roc_corner_threshold(result, labels, ["a"])
        accepted = apply_threshold(result, got) > 0
        assert accepted.tolist() == (goodness >= expected).tolist()


@pytest.mark.parametrize("higher_is_better", [True, False])
def test_fnmr_at_fmr_with_ties_and_padding_matches_exhaustive_search(higher_is_better: bool) -> None:
    rng = np.random.default_rng(4)
    size = 40
    genuine = rng.random(size) < 0.5
    goodness = rng.integers(0, 6, size) / 5.0
    goodness[[3, 7]] = np.nan  # no neighbour for two queries: never accepted
    sign = 1.0 if higher_is_better else -1.0
    result = SearchResult(
        (sign * goodness)[:, None],
        np.where(np.isnan(goodness), -1, 0)[:, None],
        higher_is_better,
    )
    labels = ["a" if flag else None for flag in genuine]
    top1 = np.where(np.isnan(goodness), -np.inf, goodness)
    for point in fnmr_at_fmr(result, labels, ["a"], (0.0, 0.05, 0.2, 0.5, 1.0)):
        feasible = [
            (np.mean(top1[genuine] < level), -np.mean(top1[~genuine] >= level))
            for level in [*np.unique(top1[np.isfinite(top1)]), np.inf]
            if np.mean(top1[~genuine] >= level) <= point.target_fmr
        ]
        best_fnmr, negative_fmr = min(feasible)
        assert point.fnmr == pytest.approx(best_fnmr)
        assert point.fmr == pytest.approx(-negative_fmr)
        accepted = apply_threshold(result, point.threshold) > 0
        assert accepted[~genuine].mean() == pytest.approx(point.fmr)
        assert (~accepted[genuine]).mean() == pytest.approx(point.fnmr)


@pytest.mark.parametrize("higher_is_better", [True, False])
def test_tuning_with_ties_and_nan_reaches_the_brute_force_best(higher_is_better: bool) -> None:
    rng = np.random.default_rng(5)
    size, k = 30, 4
    goodness = -np.sort(-(rng.integers(0, 6, (size, k)) / 5.0), axis=1)
    goodness[2, 1:] = np.nan  # a list whose tail has no scores
    sign = 1.0 if higher_is_better else -1.0
    gallery_labels = ["a", "b", "c", "a", "b", None]
    indices = np.stack([rng.permutation(len(gallery_labels))[:k] for _ in range(size)])
    query_labels = [["a", "b", "c", None, "z"][i] for i in rng.integers(0, 5, size)]
    result = SearchResult(sign * goodness, indices, higher_is_better)
    answers = naive_answers(query_labels, gallery_labels, None)
    values = np.unique(goodness[np.isfinite(goodness)])
    grid = sign * np.concatenate([values, values - 1e-3, values + 1e-3])

    def naive_map(threshold: float) -> float:
        lists = naive_lists(result, threshold)
        return float(np.mean([kaggle_apk(a, p, 3) for a, p in zip(answers, lists)]))

    brute_force = max(naive_map(t) for t in grid)
    best, curve = tune_threshold(result, query_labels, gallery_labels, "map@3")
    assert naive_map(best) == pytest.approx(brute_force)
    assert curve[:, 1].max() == pytest.approx(brute_force)


def test_holdout_never_treats_unlabelled_items_as_a_class() -> None:
    query_labels = ["a", None, "b", "b"]
    gallery_labels = ["a", None, "b", None, "c"]
    keep, held = holdout_distractors(query_labels, gallery_labels, fraction=1.0)
    assert held == ["a", "b"]
    # Distractor images (None) and classes no query shows ("c") stay in the gallery.
    assert keep.tolist() == [False, True, False, True, True]
    for seed in range(5):
        keep, held = holdout_distractors(query_labels, gallery_labels, fraction=0.5, seed=seed)
        assert len(held) == 1 and held[0] in {"a", "b"}
        assert keep.tolist() == [label is None or label not in held for label in gallery_labels]


@pytest.mark.parametrize("higher_is_better", [True, False])
def test_area_under_the_open_set_roc_is_sklearns_auc_with_ties(higher_is_better: bool) -> None:
    rng = np.random.default_rng(6)
    for _ in range(30):
        size = int(rng.integers(4, 30))
        genuine = rng.random(size) < 0.5
        genuine[:2] = [True, False]
        goodness = rng.integers(0, 6, size) / 5.0
        scores = (goodness if higher_is_better else -goodness)[:, None]
        result = SearchResult(scores, np.zeros((size, 1), dtype=np.int64), higher_is_better)
        fmr, tmr, _ = open_set_roc(result, ["a" if g else None for g in genuine], ["a"])
        assert np.trapezoid(tmr, fmr) == pytest.approx(roc_auc_score(genuine, goodness))
