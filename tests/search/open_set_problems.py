"""Small open-set problems shared by the rejection, open-set score and threshold tests."""

from __future__ import annotations

import numpy as np

from lookalike.index.result import SearchResult

GALLERY_LABELS = ["a", "b", "c", "a"]
QUERY_LABELS = ["a", None, "z"]


def hand_result(higher_is_better: bool = True) -> SearchResult:
    scores = np.array([[0.9, 0.8, 0.6, 0.3], [0.95, 0.6, 0.5, 0.2], [0.5, 0.4, 0.3, 0.2]])
    indices = np.array([[1, 0, 2, 3], [2, 0, 1, 3], [0, 3, 1, 2]])
    return SearchResult(scores if higher_is_better else -scores, indices, higher_is_better)


def random_problem(seed: int, higher_is_better: bool) -> tuple[SearchResult, list, list]:
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
