"""Class answers: top-k classes, "no match" insertion and MAP@5 tuning, kNN votes and fusion,
each against a naive loop."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lookalike.index.result import SearchResult
from lookalike.report.submission import predictions
from lookalike.search.class_answers import fuse_class_scores, knn_class_votes, top_classes
from lookalike.search.thresholds import tune_threshold

CLASSES = ["a", "b", "c", "d", "e", "f"]


def naive_answers(
    scores: np.ndarray, k: int, threshold: float | None, token: str = "no_match"
) -> list[list[str]]:
    """Sort each row by probability; put the token before the first class below the threshold."""
    rows = []
    for row in scores.tolist():
        ranked = sorted(range(len(row)), key=lambda c: (-row[c], c))[:k]
        answer: list[str] = []
        inserted = threshold is None
        for c in ranked:
            if not inserted and np.float32(row[c]) < np.float32(threshold):
                answer.append(token)
                inserted = True
            answer.append(CLASSES[c])
        if not inserted:
            answer.append(token)
        rows.append(answer[:k])
    return rows


def naive_map5(answers: list[list[str]], truths: list[str | None], token: str = "no_match") -> float:
    total = 0.0
    for answer, truth in zip(answers, truths, strict=True):
        wanted = token if truth is None or truth not in CLASSES else truth
        for rank, item in enumerate(answer[:5]):
            if item == wanted:
                total += 1.0 / (rank + 1)
                break
    return total / len(answers)


@pytest.fixture
def probabilities() -> np.ndarray:
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(40, len(CLASSES))) * 2
    return (np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("threshold", [None, 0.05, 0.3, 0.6, 0.99])
def test_top_classes_and_no_match_match_a_naive_loop(
    probabilities: np.ndarray, threshold: float | None
) -> None:
    answers = top_classes(probabilities, CLASSES, k=5)
    got = predictions(answers.result, CLASSES, k=5, rejection_threshold=threshold)
    assert got == naive_answers(probabilities, 5, threshold)
    assert answers.labels() == [row[:5] for row in naive_answers(probabilities, 5, None)]


def test_tuned_threshold_maximises_a_naive_map5(probabilities: np.ndarray) -> None:
    rng = np.random.default_rng(1)
    truths: list[str | None] = [CLASSES[int(np.argmax(row))] if rng.random() < 0.5
                                else CLASSES[rng.integers(len(CLASSES))] for row in probabilities]
    truths[::4] = [None] * len(truths[::4])       # distractors
    truths[1::9] = ["zebra"] * len(truths[1::9])  # a class the head never saw: a distractor too
    answers = top_classes(probabilities, CLASSES, k=5)
    threshold, curve = tune_threshold(answers.result, truths, CLASSES, "map@5")
    for level, value in curve:
        naive = naive_map5(naive_answers(probabilities, 5, float(level)), truths)
        assert value == pytest.approx(naive)
    best = max(naive_map5(naive_answers(probabilities, 5, float(t)), truths) for t in curve[:, 0])
    assert naive_map5(naive_answers(probabilities, 5, threshold), truths) == pytest.approx(best)


def test_knn_votes_match_a_naive_loop() -> None:
    scores = np.array([[0.9, 0.8, 0.1, 0.0], [0.5, 0.4, 0.3, 0.2]], dtype=np.float32)
    indices = np.array([[0, 2, 1, -1], [3, 1, 4, 0]])
    gallery = ["a", "b", "a", None, "zebra"]
    votes = knn_class_votes(SearchResult(scores, indices), gallery, CLASSES, temperature=0.1)
    for q in range(2):
        weights = [math.exp(s / 0.1) if i >= 0 else 0.0 for s, i in zip(scores[q], indices[q])]
        total = sum(weights)
        expected = [0.0] * len(CLASSES)
        for w, i in zip(weights, indices[q], strict=True):
            if i >= 0 and gallery[i] in CLASSES:
                expected[CLASSES.index(gallery[i])] += w / total
        np.testing.assert_allclose(votes[q], expected, rtol=1e-5, atol=1e-7)
    assert votes[1].sum() < 1.0  # the unlabelled and unknown neighbours keep their share


def test_knn_votes_of_distances_negate_them() -> None:
    result = SearchResult(np.array([[0.1, 0.5]]), np.array([[0, 1]]), higher_is_better=False)
    votes = knn_class_votes(result, ["a", "b"], CLASSES, temperature=0.1)
    assert votes[0, 0] > votes[0, 1] and votes.sum() == pytest.approx(1.0)


def test_fusion_is_a_convex_mix() -> None:
    p = np.array([[0.7, 0.3]], dtype=np.float32)
    v = np.array([[0.0, 1.0]], dtype=np.float32)
    np.testing.assert_allclose(fuse_class_scores(p, v, 0.25), [[0.525, 0.475]])
    with pytest.raises(ValueError, match="vote_weight"):
        fuse_class_scores(p, v, 1.5)


def test_bad_shapes() -> None:
    with pytest.raises(ValueError, match=r"must be \(Q, 6\)"):
        top_classes(np.zeros((2, 3)), CLASSES)


def test_nearest_class_scores_are_the_first_occurrences() -> None:
    from lookalike.search.class_answers import nearest_class_scores

    result = SearchResult(np.array([[0.9, 0.8, 0.7, 0.1]]), np.array([[2, 0, 1, 3]]))
    gallery = ["a", "b", "a", None]
    scores = nearest_class_scores(result, gallery, CLASSES)
    assert scores[0, 0] == pytest.approx(0.9) and scores[0, 1] == pytest.approx(0.7)
    assert np.isneginf(scores[0, 2:]).all()
    answers = top_classes(scores, CLASSES, k=2)
    assert answers.labels() == [["a", "b"]]
    # the class answers equal what the Kaggle writer reads off the image ranking
    assert predictions(answers.result, CLASSES, k=2, rejection_threshold=0.8) == predictions(
        result, [g or "unlabelled" for g in gallery], k=2, rejection_threshold=0.8)
