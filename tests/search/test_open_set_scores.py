"""Open-set scores against hand-computed examples, naive loops and sklearn; every objective."""

from __future__ import annotations

import numpy as np
import pytest
from open_set_problems import GALLERY_LABELS, QUERY_LABELS, hand_result, random_problem
from sklearn.metrics import roc_curve

from lookalike.index.result import SearchResult
from lookalike.search.open_set_scores import (
    OBJECTIVES,
    accept_reject_f1,
    create_objective,
    fnmr_at_fmr,
    map_at_k_with_rejection,
    open_set_roc,
    weighted_topk_with_rejection,
)
from lookalike.search.rejection import accepted
from lookalike.search.thresholds import tune_threshold
from naive_metrics import kaggle_apk

NO_MATCH = "no match"


def _lists_with_no_match(result: SearchResult, threshold: float) -> list[list]:
    """Each query's gallery rows with :data:`NO_MATCH` before the first score worse than
    ``threshold``, one neighbour at a time (thresholds are compared as float32, like scores)."""
    level = float(np.float32(threshold))
    lists = []
    for scores, rows in zip(result.scores.tolist(), result.indices.tolist()):
        kept = [s >= level if result.higher_is_better else s <= level for s in scores]
        cut = kept.index(False) if False in kept else len(rows)
        lists.append([*rows[:cut], NO_MATCH, *rows[cut:]])
    return lists


def _answers(query_labels: list, gallery_labels: list) -> list[set]:
    return [
        {row for row, label in enumerate(gallery_labels) if label == query} or {NO_MATCH}
        for query in query_labels
    ]


@pytest.mark.parametrize("higher_is_better", [True, False])
def test_map_and_weighted_topk_hand_computed(higher_is_better):
    result = hand_result(higher_is_better)
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
    result, query_labels, gallery_labels = random_problem(0, higher_is_better)
    answers = _answers(query_labels, gallery_labels)
    genuine = np.array([NO_MATCH not in answer for answer in answers])
    assert 0 < genuine.sum() < len(genuine)
    for threshold in np.quantile(result.scores[:, :3], [0.1, 0.5, 0.9]):
        lists = _lists_with_no_match(result, threshold)
        naive_map = np.mean([kaggle_apk(a, p, 5) for a, p in zip(answers, lists)])
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


@pytest.mark.parametrize("name", OBJECTIVES.names())
@pytest.mark.parametrize("higher_is_better", [True, False])
def test_every_objective_builds_and_tuning_reaches_its_best_value(name, higher_is_better):
    concrete = name.replace("@k", "@3")
    objective = create_objective(concrete)
    result, query_labels, gallery_labels = random_problem(5, higher_is_better)
    assert isinstance(objective.depth, int) and 1 <= objective.depth <= result.k
    best, curve = tune_threshold(result, query_labels, gallery_labels, objective=concrete)
    value = objective.evaluate(result, query_labels, gallery_labels, best)
    assert np.isfinite(value) and value == pytest.approx(curve[:, 1].max())


@pytest.mark.parametrize("name", ["recall", "map@", "f1@3", "weighted_topk@5"])
def test_unknown_objectives_list_the_valid_names(name):
    with pytest.raises(ValueError, match="valid names: f1, map@k, weighted_topk"):
        create_objective(name)


@pytest.mark.parametrize("name", ["map@k", "map@0"])
def test_map_objective_needs_a_positive_cut_off(name):
    with pytest.raises(ValueError, match="cut-off"):
        create_objective(name)


@pytest.mark.parametrize("higher_is_better", [True, False])
def test_open_set_roc_matches_sklearn(higher_is_better):
    result, query_labels, gallery_labels = random_problem(3, higher_is_better)
    genuine = np.array([label in set(gallery_labels) for label in query_labels])
    goodness = result.scores[:, 0] if higher_is_better else -result.scores[:, 0]
    fpr, tpr, thresholds = roc_curve(genuine, goodness, drop_intermediate=False)
    fmr, tmr, ours = open_set_roc(result, query_labels, gallery_labels)
    np.testing.assert_allclose(fmr, fpr)
    np.testing.assert_allclose(tmr, tpr)
    np.testing.assert_allclose(ours[1:], thresholds[1:] if higher_is_better else -thresholds[1:])


@pytest.mark.parametrize("higher_is_better", [True, False])
def test_fnmr_at_fmr_matches_exhaustive_search(higher_is_better):
    result, query_labels, gallery_labels = random_problem(4, higher_is_better)
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


def test_unlabelled_gallery_items_are_distractor_images_never_a_match() -> None:
    from lookalike.index.result import SearchResult
    from lookalike.search.open_set_scores import relevance

    result = SearchResult(np.array([[0.9, 0.8], [0.7, 0.6]]), np.array([[1, 0], [1, 2]]))
    table = relevance(result, ["a", "b"], ["a", None, "c"], depth=2)
    # Query "a": row 1 is unlabelled (never right), row 0 is its class; query "b" is unseen.
    assert table.relevant.tolist() == [[False, True], [False, False]]
    assert table.genuine.tolist() == [True, False]
    assert table.num_relevant.tolist() == [1, 1]
