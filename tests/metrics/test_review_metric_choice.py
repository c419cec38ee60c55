"""Review of choose_metric on a separate query/gallery split (unlabelled items, classes larger than
the metrics' depth) against a naive loop, and of the monitors it accepts."""

from __future__ import annotations

import numpy as np
import pytest
from metric_choice_problem import l1_wins_problem

from lookalike.metrics.metric_choice import choose_metric

METRICS = ("cosine", "ip", "l2", "l1")


def naive_scores(
    queries: np.ndarray, gallery: np.ndarray, query_labels: list, gallery_labels: list, metric: str
) -> dict[str, float]:
    """MAP@R (Musgrave et al. 2020) and Recall@1 of each labelled query with a positive, by a
    plain loop over the whole gallery (unlabelled gallery items are never relevant)."""
    q, g = np.asarray(queries, np.float64), np.asarray(gallery, np.float64)
    if metric == "cosine":
        q = q / np.linalg.norm(q, axis=1, keepdims=True)
        g = g / np.linalg.norm(g, axis=1, keepdims=True)
    map_r, recall1 = [], []
    for row, label in enumerate(query_labels):
        if label is None:
            continue
        if metric in ("cosine", "ip"):
            cost = -(g @ q[row])
        elif metric == "l2":
            cost = np.sqrt(((g - q[row]) ** 2).sum(axis=1))
        else:
            cost = np.abs(g - q[row]).sum(axis=1)
        relevant = np.array([other == label for other in gallery_labels])[np.argsort(cost, kind="stable")]
        r = int(relevant.sum())
        if r == 0:
            continue
        hits = np.cumsum(relevant[:r])
        map_r.append(float((hits / np.arange(1, r + 1) * relevant[:r]).sum() / r))
        recall1.append(float(relevant[0]))
    return {"map@r": float(np.mean(map_r)), "recall@1": float(np.mean(recall1))}


@pytest.mark.parametrize("monitor", ["map@r", "recall@1"])
def test_split_with_unlabelled_items_and_large_classes_matches_a_naive_loop(monitor: str) -> None:
    vectors, labels = l1_wins_problem(seed=3, classes=3, per_class=30)  # R = 15 > depth 10
    queries, gallery = vectors[::2], vectors[1::2]
    query_labels: list = list(labels[::2])
    gallery_labels: list = list(labels[1::2])
    query_labels[0] = query_labels[5] = None
    gallery_labels[2] = None
    naive = {m: naive_scores(queries, gallery, query_labels, gallery_labels, m) for m in METRICS}
    choice = choose_metric(queries, gallery, query_labels, gallery_labels, monitor=monitor)
    for metric in METRICS:
        assert choice.scores[metric][monitor] == pytest.approx(naive[metric][monitor], abs=1e-6)
    best = max(METRICS, key=lambda m: naive[m][monitor])  # first among ties, as documented
    assert choice.metric == best
    assert (choice.n_queries, choice.n_gallery) == (45, 45)


@pytest.mark.parametrize("monitor", ["n_queries", "n_queries_without_positives"])
def test_counts_are_not_metrics_to_monitor(monitor: str) -> None:
    vectors, labels = l1_wins_problem()
    with pytest.raises(ValueError, match=f"unknown metric to monitor '{monitor}'; valid: recall@1"):
        choose_metric(vectors, vectors, labels, labels, monitor=monitor)
