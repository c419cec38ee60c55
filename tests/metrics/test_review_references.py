"""Review: every metric against an independent reference, on the cases users hit.

References, written here or imported: pytorch-metric-learning's ``AccuracyCalculator`` (its own
conventions: ``k="max_bin_count"``, ``ref_includes_query`` with the queries as the first rows of
the reference, lone queries left out, clustering metrics ``exclude``d), cirtorch's
``compute_map`` junk loop (positives shifted up past the junk ranked before them; queries without
positives left out), Kaggle's ``apk``/``mapk`` (ml_metrics, verbatim), and a naive full sort.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
from ranked_metrics import with_per_query

from lookalike.metrics import evaluate_retrieval, retrieval_metrics
from lookalike.ranking import rank
from naive_metrics import kaggle_apk

CLUSTERING = ("NMI", "AMI")  # need k-means; not retrieval metrics


def _clustered(seed: int, count: int, classes: int, dim: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Continuous embeddings (no ties) with class structure, so the metrics are neither 0 nor 1."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, count)
    centres = rng.normal(size=(classes, dim))
    rows = centres[labels] + 1.2 * rng.normal(size=(count, dim))
    return rows.astype(np.float32), labels


def test_pml_reference_that_includes_the_queries_plus_other_items() -> None:
    """pml's ``ref_includes_query``: the queries are the reference's first rows; ours: exclude
    each query's own row (R reduced by one, as pml's ``count - 1``)."""
    gallery, labels = _clustered(0, 150, 9)
    labels[59] = 99  # lone: its only image is itself
    queries, query_labels = gallery[:60], labels[:60]
    calculator = AccuracyCalculator(
        k="max_bin_count", exclude=CLUSTERING, device=torch.device("cpu")
    )
    pml = calculator.get_accuracy(queries, query_labels, gallery, labels, ref_includes_query=True)
    summary, per_query = with_per_query(
        queries, query_labels, gallery, labels, metric="l2", self_index=np.arange(60), chunk_size=13
    )
    assert summary["n_queries_without_positives"] == 1
    assert summary["recall@1"] == pytest.approx(pml["precision_at_1"], abs=1e-12)
    assert summary["map@r"] == pytest.approx(pml["mean_average_precision_at_r"], abs=1e-12)
    r_precision = per_query.values["r_precision"][per_query.evaluated].mean()
    assert r_precision == pytest.approx(pml["r_precision"], abs=1e-12)
    assert 0.1 < summary["map@r"] < 0.9


def test_pml_full_map_and_a_ranking_kept_one_deep() -> None:
    """MAP@R and mAP read every relevant item's rank, not the kept neighbours: a ranking that
    keeps one neighbour per query scores as pml ranking the whole reference (``k=None``)."""
    gallery, labels = _clustered(1, 120, 4)  # ~30 per class, far deeper than the kept 1
    queries, query_labels = _clustered(2, 25, 5)  # class 4 is absent from the gallery
    calculator = AccuracyCalculator(k=None, exclude=CLUSTERING, device=torch.device("cpu"))
    pml = calculator.get_accuracy(queries, query_labels, gallery, labels)
    ranking = rank(queries, gallery, query_labels, labels, metric="l2", k=1, chunk_size=4)
    summary = retrieval_metrics(ranking, ks=(1,), precision_ks=(), map_at_k=1, weights={}).summary
    assert summary["n_queries_without_positives"] == int((query_labels == 4).sum()) > 0
    assert summary["recall@1"] == pytest.approx(pml["precision_at_1"], abs=1e-12)
    assert summary["map"] == pytest.approx(pml["mean_average_precision"], abs=1e-12)
    assert summary["map@r"] == pytest.approx(pml["mean_average_precision_at_r"], abs=1e-12)
    deep = rank(queries, gallery, query_labels, labels, metric="l2", k=120)
    assert retrieval_metrics(deep, ks=(1,), precision_ks=(), map_at_k=1, weights={}).summary == (
        summary
    )


def _cirtorch_map(order: list[list[int]], ok: list[list[int]], junk: list[list[int]]) -> float:
    """cirtorch ``compute_map``'s loop (junk shifts later positives up; queries without positives
    left out) with the step AP of pml's ``mean_average_precision`` instead of its trapezoid."""
    total, empty = 0.0, 0
    for ranked, positives, junk_items in zip(order, ok, junk):
        if not positives:
            empty += 1
            continue
        pos = [place for place, item in enumerate(ranked) if item in positives]
        junk_places = [place for place, item in enumerate(ranked) if item in junk_items]
        shift, j = 0, 0
        for i in range(len(pos)):
            while j < len(junk_places) and pos[i] > junk_places[j]:
                shift += 1
                j += 1
            pos[i] -= shift
        total += sum((hit + 1) / (place + 1) for hit, place in enumerate(pos)) / len(positives)
    return total / (len(ok) - empty)


def test_map_with_junk_equals_cirtorch_compute_map() -> None:
    gallery, labels = _clustered(3, 80, 5)
    queries, query_labels = _clustered(4, 20, 5)
    rng = np.random.default_rng(5)
    junk = [sorted(rng.choice(80, rng.integers(0, 12), replace=False).tolist()) for _ in queries]
    junk[3] = np.flatnonzero(labels == query_labels[3]).tolist()  # every positive junk: left out
    summary = evaluate_retrieval(queries, query_labels, gallery, labels, metric="ip", junk=junk)
    scores = queries.astype(np.float64) @ gallery.astype(np.float64).T
    order = [sorted(range(80), key=lambda g, q=q: (-scores[q, g], g)) for q in range(20)]
    ok = [
        [g for g in range(80) if labels[g] == query_labels[q] and g not in junk[q]]
        for q in range(20)
    ]
    assert summary["n_queries_without_positives"] == 1
    assert summary["map"] == pytest.approx(_cirtorch_map(order, ok, junk), abs=1e-12)


def mapk(actual, predicted, k=10):  # Kaggle / ml_metrics, verbatim
    return np.mean([kaggle_apk(a, p, k) for a, p in zip(actual, predicted)])


@pytest.mark.parametrize("k", [1, 3, 5, 40])  # 40 > the 29 items a query can see
def test_map_at_k_equals_kaggle_mapk_with_self_and_a_small_gallery(k: int) -> None:
    gallery, labels = _clustered(6, 30, 4)
    labels[0] = 50  # lone: no positive once its own row is gone
    summary, per_query = with_per_query(
        gallery,
        labels,
        gallery,
        labels,
        metric="cosine",
        self_index=np.arange(30),
        ks=(1, k),
        precision_ks=(k,),
        map_at_k=k,
        weights={},
        skip_queries_without_positives=False,
    )
    unit = gallery / np.linalg.norm(gallery, axis=1, keepdims=True)
    scores = unit.astype(np.float64) @ unit.astype(np.float64).T
    predicted = [
        [g for g in sorted(range(30), key=lambda g, q=q: (-scores[q, g], g)) if g != q]
        for q in range(30)
    ]
    actual = [[g for g in range(30) if g != q and labels[g] == labels[q]] for q in range(30)]
    assert summary[f"map@{k}"] == pytest.approx(mapk(actual, predicted, k), abs=1e-12)
    assert summary[f"recall@{k}"] == pytest.approx(
        np.mean([any(g in a for g in p[:k]) for a, p in zip(actual, predicted)]), abs=1e-12
    )
    # precision@k keeps k as its denominator past the end of the gallery (as pml's precision_at_k)
    assert summary[f"precision@{k}"] == pytest.approx(
        np.mean([sum(g in a for g in p[:k]) / k for a, p in zip(actual, predicted)]), abs=1e-12
    )
    assert per_query.neighbours.indices.shape[1] == max(k, 1)
    assert (per_query.neighbours.indices != np.arange(30)[:, None]).all()  # never returned


def test_missing_class_left_out_by_default_counted_zero_on_request() -> None:
    gallery, labels = _clustered(7, 60, 4)
    queries, query_labels = _clustered(8, 30, 6)  # classes 4 and 5 absent from the gallery
    missing = np.isin(query_labels, [4, 5])
    assert missing.any()
    skip = evaluate_retrieval(queries, query_labels, gallery, labels, metric="l2")
    count = evaluate_retrieval(
        queries, query_labels, gallery, labels, metric="l2", skip_queries_without_positives=False
    )
    only_present = evaluate_retrieval(
        queries[~missing], query_labels[~missing], gallery, labels, metric="l2"
    )
    fraction = (~missing).mean()
    for key in ("recall@1", "recall@5", "precision@10", "map", "map@5", "map@r", "weighted_topk"):
        assert skip[key] == pytest.approx(only_present[key], abs=1e-12), key
        assert count[key] == pytest.approx(fraction * skip[key], abs=1e-12), key
    assert skip["n_queries"] == count["n_queries"] == 30
    assert skip["n_queries_without_positives"] == int(missing.sum())


def test_unlabelled_queries_and_distractors() -> None:
    """None queries are ranked but left out; None gallery items are ranked, never relevant."""
    gallery, labels = _clustered(9, 50, 3)
    gallery_labels = [None if g % 4 == 0 else int(labels[g]) for g in range(50)]
    queries, query_labels = _clustered(10, 16, 3)
    query_labels = [None if q % 5 == 0 else int(query_labels[q]) for q in range(16)]
    ranking = rank(queries, gallery, query_labels, gallery_labels, metric="ip", k=10, chunk_size=3)
    scored = retrieval_metrics(ranking, ks=(1, 5), precision_ks=(5,), map_at_k=5, weights={})
    labelled = [q for q in range(16) if query_labels[q] is not None]
    assert scored.summary["n_queries"] == len(labelled)
    scores = queries.astype(np.float64) @ gallery.astype(np.float64).T
    recall1, ap = [], []
    for q in labelled:
        order = sorted(range(50), key=lambda g, q=q: (-scores[q, g], g))
        hits = [gallery_labels[g] == query_labels[q] for g in order]  # None never equals a label
        recall1.append(float(hits[0]))
        places = [i + 1 for i, hit in enumerate(hits) if hit]
        ap.append(np.mean([(j + 1) / place for j, place in enumerate(places)]))
    assert scored.summary["recall@1"] == pytest.approx(np.mean(recall1), abs=1e-12)
    assert scored.summary["map"] == pytest.approx(np.mean(ap), abs=1e-12)
    # the distractors are still ranked: some query sees one in its top 10
    neighbours = ranking.neighbours.indices
    assert (neighbours % 4 == 0).any()
