"""Where "no match" goes: hand-computed positions for both score senses and padding."""

from __future__ import annotations

import numpy as np

from lookalike.index.result import SearchResult
from lookalike.search.rejection import accepted, apply_threshold


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
