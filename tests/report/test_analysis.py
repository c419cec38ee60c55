"""Per-class recall, confusions, predicted classes and similarity samples against naive loops."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from lookalike.embed.store import EmbeddingSet
from lookalike.index.metrics import get_metric
from lookalike.ranking import UNLABELLED, Ranking, rank
from lookalike.report.analysis import (
    analyse_ranking,
    confused_pairs,
    paired_scores,
    per_class_recall,
    predicted_class_counts,
    random_rows,
    select_queries,
    similarity_samples,
)
from lookalike.search.topk import self_exclusion


def _ranking(query: EmbeddingSet, gallery: EmbeddingSet, exclude_self: bool) -> Ranking:
    """The run's ranking, as ``evaluate`` saves it for the report."""
    own = self_exclusion(query.ids, gallery.ids) if exclude_self else None
    return rank(query.embeddings, gallery.embeddings, query.labels, gallery.labels, k=10,
                exclude_rows=own)


def _sets(seed: int = 0, with_distractors: bool = True) -> tuple[EmbeddingSet, EmbeddingSet]:
    rng = np.random.default_rng(seed)
    classes = ["a", "b", "c", "d", "e"]
    gallery_labels = [classes[i % 4] for i in range(24)]  # "e" has no gallery item
    if with_distractors:
        gallery_labels[-3:] = [None, None, None]
    query_labels = [classes[i % 5] for i in range(20)]
    if with_distractors:
        query_labels[-2:] = [None, None]
    gallery = EmbeddingSet(rng.standard_normal((24, 6)), [f"g{i}" for i in range(24)],
                           [f"g{i}.png" for i in range(24)], gallery_labels)
    query = EmbeddingSet(rng.standard_normal((20, 6)), [f"q{i}" for i in range(20)],
                         [f"q{i}.png" for i in range(20)], query_labels)
    return query, gallery


def _scores(metric: str, query: np.ndarray, gallery: np.ndarray) -> np.ndarray:
    """Brute-force (Q, N) scores in the metric's own sense (similarity or distance)."""
    if metric == "cosine":
        q = query / np.linalg.norm(query, axis=1, keepdims=True)
        g = gallery / np.linalg.norm(gallery, axis=1, keepdims=True)
        return q @ g.T
    if metric == "ip":
        return query @ gallery.T
    order = 2 if metric == "l2" else 1
    return np.array([[np.linalg.norm(a - b, ord=order) for b in gallery] for a in query])


def _naive_top1(query: EmbeddingSet, gallery: EmbeddingSet, own: dict[int, int]) -> list:
    """Top-1 gallery label of each labelled query by a plain loop (cosine)."""
    scores = _scores("cosine", query.embeddings.astype(np.float64), gallery.embeddings)
    top = []
    for q, label in enumerate(query.labels):
        if label is None:
            continue
        row = scores[q].copy()
        if q in own:
            row[own[q]] = -np.inf
        best = int(np.argmax(row))
        top.append(gallery.labels[best] if gallery.labels[best] is not None else UNLABELLED)
    return top


@pytest.mark.parametrize("exclude_self", [False, True])
def test_per_class_recall_confusions_and_predictions_match_naive_loops(exclude_self: bool) -> None:
    query, gallery = _sets()
    own: dict[int, int] = {}
    if exclude_self:
        rows = [0, 1, 2, 5, 6, 9, 10, 13, 20, 21, 23]
        query = gallery.select(rows)
        own = dict(enumerate(rows))
    analysis = analyse_ranking(_ranking(query, gallery, exclude_self), k=4)
    labelled = [label for label in query.labels if label is not None]
    top1 = _naive_top1(query, gallery, own)
    assert analysis.top1_labels == top1

    counts, hits = Counter(), Counter()
    gallery_counts = Counter(gallery.labels)
    for position, (label, predicted) in enumerate(zip(labelled, top1)):
        row = int(analysis.query_rows[position])
        positives = gallery_counts[label] - (1 if row in own else 0)
        if positives == 0:
            continue  # no relevant item: left out, as in metrics.json
        counts[label] += 1
        hits[label] += predicted == label
    expected = sorted(counts, key=lambda c: (hits[c] / counts[c], c))
    classes = per_class_recall(labelled, analysis.per_query.values["recall@1"],
                               analysis.per_query.evaluated)
    got = [(c.label, c.hits, c.count) for c in classes]
    assert got == [(c, hits[c], counts[c]) for c in expected]
    assert "e" not in {c.label for c in classes}

    naive_pairs = Counter((t, p) for t, p in zip(labelled, top1) if t != p)
    assert {(t, p): n for t, p, n in confused_pairs(labelled, top1, limit=100)} == naive_pairs
    assert dict(predicted_class_counts(top1)) == Counter(top1)


def test_confused_pairs_order_and_limit() -> None:
    truth = ["a", "a", "a", "b", "b", "c", "c"]
    predicted = ["b", "b", "a", "a", "c", "a", None]
    assert confused_pairs(truth, predicted) == [("a", "b", 2), ("b", "a", 1), ("b", "c", 1),
                                                ("c", "a", 1)]
    assert confused_pairs(truth, predicted, limit=1) == [("a", "b", 2)]
    with pytest.raises(ValueError, match="top-1 labels"):
        confused_pairs(truth, predicted[:-1])


def test_analysis_needs_labels() -> None:
    query, gallery = _sets()
    unlabelled = EmbeddingSet(query.embeddings, query.ids, query.paths, [None] * len(query))
    assert analyse_ranking(_ranking(unlabelled, gallery, False)) is None


@pytest.mark.parametrize("metric", ["cosine", "ip", "l2", "l1"])
def test_paired_scores_match_brute_force(metric: str) -> None:
    query, gallery = _sets()
    pairs = np.array([[0, 0], [3, 7], [19, 23], [5, 5]] * 300)  # several chunks
    full = _scores(metric, query.embeddings.astype(np.float64), gallery.embeddings)
    got = paired_scores(get_metric(metric), query.embeddings, gallery.embeddings, pairs)
    assert got == pytest.approx(full[pairs[:, 0], pairs[:, 1]], abs=1e-5)


@pytest.mark.parametrize("exclude_self", [False, True])
def test_exhaustive_similarity_samples_equal_brute_force(exclude_self: bool) -> None:
    query, gallery = _sets()
    own = {}
    if exclude_self:
        query = gallery.select([0, 4, 21, 22])
        own = {0: 0, 1: 4, 2: 21, 3: 22}
    samples = similarity_samples(query, gallery, "l2", exclude_self=exclude_self)
    assert samples.exhaustive
    full = _scores("l2", query.embeddings.astype(np.float64), gallery.embeddings)
    positive, negative = [], []
    for q, label in enumerate(query.labels):
        for g, gallery_label in enumerate(gallery.labels):
            if own.get(q) == g:
                continue
            same = label is not None and label == gallery_label
            (positive if same else negative).append(full[q, g])
    assert np.sort(samples.positive) == pytest.approx(np.sort(positive), abs=1e-5)
    assert np.sort(samples.negative) == pytest.approx(np.sort(negative), abs=1e-5)


def test_sampled_similarity_pairs_are_labelled_right_and_scored_right() -> None:
    query, gallery = _sets()
    own_query = gallery.select(range(20))
    samples = similarity_samples(own_query, gallery, "cosine", exclude_self=True, max_pairs=200,
                                 seed=3)
    assert not samples.exhaustive
    assert len(samples.positive) == len(samples.negative) == 100
    full = _scores("cosine", own_query.embeddings.astype(np.float64), gallery.embeddings)
    for pairs, scores, same in ((samples.positive_pairs, samples.positive, True),
                                (samples.negative_pairs, samples.negative, False)):
        assert scores == pytest.approx(full[pairs[:, 0], pairs[:, 1]], abs=1e-5)
        for q, g in pairs.tolist():
            assert q != g  # query q is gallery row q: never paired with itself
            label, gallery_label = own_query.labels[q], gallery.labels[g]
            assert (label is not None and label == gallery_label) == same
    again = similarity_samples(own_query, gallery, "cosine", True, max_pairs=200, seed=3)
    assert np.array_equal(again.positive_pairs, samples.positive_pairs)


def test_select_queries_matches_a_naive_sort() -> None:
    ap = np.array([0.5, 1.0, 0.2, 1.0, 0.5, 0.0])
    first = np.array([2, 1, 3, 1, 1, 0])
    chosen = select_queries(ap, first, count=3)
    naive = sorted(range(6), key=lambda i: (-ap[i], first[i] if first[i] else 10**9, i))
    assert chosen["best"].tolist() == naive[:3] == [1, 3, 4]
    assert chosen["worst"].tolist() == naive[::-1][:3] == [5, 2, 0]


def test_random_rows_are_seeded_and_avoid_shown_rows() -> None:
    rows = random_rows(50, 5, seed=1, avoid=[0, 1, 2])
    assert np.array_equal(rows, random_rows(50, 5, seed=1, avoid=[0, 1, 2]))
    assert len(set(rows.tolist())) == 5 and not set(rows.tolist()) & {0, 1, 2}
    assert sorted(random_rows(4, 5, seed=0, avoid=[0]).tolist()) == [0, 1, 2, 3]
