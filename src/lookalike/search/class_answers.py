"""Answers by class: a classifier head's top-k classes, kNN class votes, and their fusion.

A retrieval answer ranks gallery *images*; a class answer ranks *classes*. Both are the same
object here, a :class:`~lookalike.index.result.SearchResult`, whose "gallery" is the list of
classes: row ``q`` holds the ``k`` most probable classes of query ``q`` (``indices`` are class
positions, ``scores`` their probabilities, higher is better). Everything written for retrieval
answers therefore reads class answers unchanged: "no match" inserted below a probability
threshold (:func:`~lookalike.search.rejection.apply_threshold`), the threshold tuned for MAP@5
(:func:`~lookalike.search.thresholds.tune_threshold` with the class names as gallery labels),
and the Kaggle CSV writer (:func:`~lookalike.report.submission.write_kaggle_csv` with the class
names as gallery ids and labels).

Sources of class scores, each ``(Q, C)``:

- the head's probabilities (softmax, or sigmoid for a multi-label BCE head);
- kNN answers (:func:`nearest_class_scores`): each class scored by its nearest gallery image,
  the answers a Kaggle CSV of retrieved labels gives (deduplicated in rank order);
- kNN class votes (:func:`knn_class_votes`): the neighbours' similarity-weighted vote,
  ``v[q, c] = sum_{j in N_k(q), y_j = c} exp(s_qj / T) / sum_{j in N_k(q)} exp(s_qj / T)``
  (the weighted kNN classifier of Wu et al. 2018, used by DINO, Caron et al. 2021);
- their fusion (:func:`fuse_class_scores`), ``(1 - w) p + w v``.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np

from lookalike.index.result import SearchResult


@dataclass
class ClassAnswers:
    """The top classes of each query.

    Attributes:
        result: ``(Q, k)`` class positions (into ``classes``) and their scores, best first.
        classes: The ``C`` class names.
    """

    result: SearchResult
    classes: list[str]

    def labels(self) -> list[list[str]]:
        """Each query's ranked class names."""
        return [[self.classes[i] for i in row if i >= 0] for row in self.result.indices.tolist()]


def top_classes(scores: np.ndarray, classes: Sequence[str], k: int = 5) -> ClassAnswers:
    """The ``k`` best classes of each row of ``scores`` (ties: lower class position first).

    Args:
        scores: ``(Q, C)`` class probabilities or votes.
        classes: The ``C`` class names.
        k: Classes per query; beyond ``C`` the columns are padding (index -1, score -inf), as in
            a search result of a gallery smaller than ``k``.

    Raises:
        ValueError: ``scores`` is not ``(Q, C)``, or ``k < 1``.
    """
    scores = np.asarray(scores, dtype=np.float32)
    if scores.ndim != 2 or scores.shape[1] != len(classes):
        raise ValueError(
            f"class scores must be (Q, {len(classes)}) for {len(classes)} classes, "
            f"got {scores.shape}"
        )
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    depth = min(k, len(classes))
    order = np.argsort(-scores, axis=1, kind="stable")[:, :depth]
    ranked = np.take_along_axis(scores, order, axis=1)
    padding = ((0, 0), (0, k - depth))
    order = np.pad(order, padding, constant_values=-1)
    ranked = np.pad(ranked, padding, constant_values=-np.inf)
    return ClassAnswers(SearchResult(ranked, order, True), [str(name) for name in classes])


def nearest_class_scores(
    result: SearchResult, gallery_labels: Sequence[Hashable | None], classes: Sequence[str]
) -> np.ndarray:
    """Each class's score is its best-ranked neighbour's (similarity, or negated distance).

    Args:
        result: ``(Q, K)`` neighbours in a labelled gallery, best first.
        gallery_labels: ``N`` gallery labels; unlabelled or unknown neighbours are skipped.
        classes: The ``C`` classes.

    Returns:
        ``(Q, C)`` float32, ``-inf`` for classes not among a query's neighbours.
    """
    position = {str(name): code for code, name in enumerate(classes)}
    scores = np.full((len(result), len(classes)), -np.inf, dtype=np.float32)
    signed = result.scores if result.higher_is_better else -result.scores
    # best first: walking the columns backwards leaves each class its best-ranked score
    for column in range(result.k - 1, -1, -1):
        for row, (index, score) in enumerate(zip(result.indices[:, column], signed[:, column])):
            label = gallery_labels[index] if index >= 0 else None
            code = None if label is None else position.get(str(label))
            if code is not None:
                scores[row, code] = score
    return scores


def knn_class_votes(
    result: SearchResult,
    gallery_labels: Sequence[Hashable | None],
    classes: Sequence[str],
    temperature: float = 0.05,
) -> np.ndarray:
    """Similarity-weighted class votes of each query's retrieved neighbours.

    Args:
        result: ``(Q, K)`` neighbours of the queries in a labelled gallery (similarities, or
            distances, which are negated).
        gallery_labels: ``N`` gallery labels; unlabelled (None) or unknown ones vote for nothing
            but still take their share of the weight.
        classes: The ``C`` classes voted for (a head's classes, for fusion).
        temperature: ``T`` of the weights ``exp(s / T)`` (> 0).

    Returns:
        ``(Q, C)`` float32 votes; each row sums to at most 1.
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    position = {str(name): code for code, name in enumerate(classes)}
    codes = np.array(
        [-1 if label is None else position.get(str(label), -1) for label in gallery_labels],
        dtype=np.int64,
    )
    valid = result.indices >= 0
    similarity = result.scores.astype(np.float64)
    similarity = similarity if result.higher_is_better else -similarity
    logits = np.where(valid, similarity / temperature, -np.inf)
    top = logits.max(axis=1, keepdims=True)
    weights = np.where(valid, np.exp(logits - np.where(np.isfinite(top), top, 0.0)), 0.0)
    totals = weights.sum(axis=1, keepdims=True)
    weights = np.divide(weights, totals, out=np.zeros_like(weights), where=totals > 0)
    neighbour_codes = np.where(valid, codes[np.maximum(result.indices, 0)], -1)
    votes = np.zeros((len(result), len(classes)), dtype=np.float64)
    rows, columns = np.nonzero(neighbour_codes >= 0)
    np.add.at(votes, (rows, neighbour_codes[rows, columns]), weights[rows, columns])
    return votes.astype(np.float32)


def fuse_class_scores(
    probabilities: np.ndarray, votes: np.ndarray, vote_weight: float = 0.5
) -> np.ndarray:
    """``(1 - w) p + w v``: the head's probabilities and the kNN votes, ``(Q, C)`` each."""
    if not 0.0 <= vote_weight <= 1.0:
        raise ValueError(f"vote_weight must lie in [0, 1], got {vote_weight}")
    probabilities = np.asarray(probabilities, dtype=np.float32)
    votes = np.asarray(votes, dtype=np.float32)
    if probabilities.shape != votes.shape:
        raise ValueError(f"probabilities {probabilities.shape} and votes {votes.shape} differ")
    return (1.0 - vote_weight) * probabilities + vote_weight * votes
