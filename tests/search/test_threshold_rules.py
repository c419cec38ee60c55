"""The ROC corner rule against a naive loop over every candidate threshold; the rule registry."""

from __future__ import annotations

import numpy as np
import pytest
from open_set_problems import random_problem

from lookalike.embed.store import EmbeddingSet
from lookalike.index.result import SearchResult
from lookalike.pipeline.open_set import RejectionSpec, rejection_metrics, tune_rejection
from lookalike.ranking import rank
from lookalike.search.threshold_rules import THRESHOLD_RULES, apply_rule, roc_corner_threshold
from lookalike.search.thresholds import nearest_positive_scores, percentile_threshold


def naive_roc_corner(result: SearchResult, query_labels: list, gallery_labels: list) -> float:
    """Try every top-1 score (and one past the best) as a threshold; keep the one nearest
    (FPR 0, TPR 1), the most lenient among ties."""
    top1 = result.scores[:, 0].astype(np.float64)
    genuine = np.array([label is not None and label in set(gallery_labels) for label in query_labels])
    sign = 1.0 if result.higher_is_better else -1.0
    candidates = sorted(set(top1.tolist()), key=lambda s: sign * s)  # most lenient first
    best, best_distance = None, np.inf
    for threshold in candidates + [None]:
        if threshold is None:
            accepted = np.zeros(len(top1), dtype=bool)
        else:
            accepted = sign * top1 >= sign * threshold
        tpr = accepted[genuine].mean()
        fpr = accepted[~genuine].mean()
        distance = fpr**2 + (1 - tpr) ** 2
        if distance < best_distance - 1e-15:
            best, best_distance = threshold, distance
    return best


@pytest.mark.parametrize("higher_is_better", [True, False])
@pytest.mark.parametrize("seed", range(6))
def test_roc_corner_matches_a_naive_loop(seed: int, higher_is_better: bool) -> None:
    result, query_labels, gallery_labels = random_problem(seed, higher_is_better)
    expected = naive_roc_corner(result, query_labels, gallery_labels)
    assert expected is not None
    assert roc_corner_threshold(result, query_labels, gallery_labels) == pytest.approx(expected, rel=1e-6)
    assert apply_rule("roc_corner", result, query_labels, gallery_labels) == pytest.approx(expected, rel=1e-6)


def test_ties_go_to_the_most_lenient_threshold() -> None:
    # Distractors score above every genuine query: rejecting all (0, 0) and accepting all (1, 1)
    # are both at distance 1 from the corner, every other point is further; accept all wins.
    scores = np.array([[0.9], [0.8], [0.2], [0.1]], dtype=np.float32)
    result = SearchResult(scores, np.zeros((4, 1), dtype=np.int64), True)
    threshold = roc_corner_threshold(result, [None, None, "a", "a"], ["a"])
    assert threshold == pytest.approx(0.1)


def test_registry_holds_the_three_rules_side_by_side() -> None:
    assert {"tuned", "percentile", "roc_corner"} <= set(THRESHOLD_RULES.names())
    result, query_labels, gallery_labels = random_problem(0, True)
    genuine = nearest_positive_scores(result, query_labels, gallery_labels)
    assert apply_rule("percentile", result, query_labels, gallery_labels, q=80.0) == percentile_threshold(genuine, 80.0)
    with pytest.raises(ValueError, match="unknown threshold rule 'corner'; valid names: percentile, roc_corner, tuned"):
        apply_rule("corner", result, query_labels, gallery_labels)


def _open_set_data() -> tuple[EmbeddingSet, EmbeddingSet]:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(10, 16))
    gallery = np.concatenate([c + 0.4 * rng.normal(size=(3, 16)) for c in centres[:6]]).astype(np.float32)
    queries = np.concatenate([
        np.concatenate([c + 0.4 * rng.normal(size=(2, 16)) for c in centres[:6]]),
        centres[6:] + 0.4 * rng.normal(size=(4, 16)),
    ]).astype(np.float32)
    g_labels = [str(i // 3) for i in range(18)]
    q_labels = [str(i // 2) for i in range(12)] + [None] * 4
    g_ids, q_ids = [f"g{i}" for i in range(18)], [f"q{i}" for i in range(16)]
    return EmbeddingSet(queries, q_ids, q_ids, q_labels), EmbeddingSet(gallery, g_ids, g_ids, g_labels)


def test_tuning_and_rejection_metrics_report_the_corner_beside_the_others() -> None:
    query, gallery = _open_set_data()
    outcome = tune_rejection(query, gallery, RejectionSpec(), metric="l2")
    assert outcome.roc_corner_threshold is not None and outcome.roc_corner_value is not None
    ranking = rank(query.embeddings, gallery.embeddings, query.labels, gallery.labels, metric="l2", k=10)
    metrics = rejection_metrics(ranking, outcome.threshold)
    expected = naive_roc_corner(ranking.neighbours, list(query.labels), list(gallery.labels))
    assert metrics["roc_corner_threshold"] == pytest.approx(expected, rel=1e-6)
    assert {"map@5_roc_corner", "weighted_topk_roc_corner", "f1_roc_corner"} <= set(metrics)
