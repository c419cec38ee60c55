"""Open-set retrieval: reject queries whose best match is too weak.

Some queries show an identity absent from the gallery ("distractors", Kaggle's ``new_whale``). A
rejection threshold on the scores inserts a "no match" answer into each ranked list at the first
position whose score is worse than the threshold; a query is *accepted* when its top-1 score is
not worse than it. Scores keep their metric's sense (``SearchResult.higher_is_better``):
internally they become a "goodness" (the similarity, or the negated distance) so every rule reads
"accept when goodness >= threshold".

Scoring lists with "no match" lives in :mod:`lookalike.search.open_set_scores`, choosing the
threshold in :mod:`lookalike.search.thresholds`.
"""

from __future__ import annotations

import math

import numpy as np

from lookalike.index.result import SearchResult


def check_threshold(threshold: float | None, name: str = "the rejection threshold") -> float | None:
    """``threshold`` as a float, None left as None; a NaN or infinite value is refused.

    A NaN threshold would reject every query ("no match" at rank 1) and an infinite one accept
    or reject all of them: a wrong answer without an error, so it is an error.

    Args:
        threshold: The threshold given (a number, or text that parses as one).
        name: What the threshold is, for the message ("--threshold", "the threshold stored
            in index/index.json").

    Raises:
        ValueError: One line naming ``name`` and the value given.
    """
    if threshold is None:
        return None
    try:
        value = float(threshold)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {threshold!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {threshold!r}")
    return value


def goodness(result: SearchResult) -> np.ndarray:
    """``(Q, k)`` float64 scores turned higher-is-better; -inf for padding and NaN."""
    scores = result.scores.astype(np.float64)
    signed = scores if result.higher_is_better else -scores
    return np.where((result.indices >= 0) & ~np.isnan(signed), signed, -np.inf)


def goodness_level(threshold: float, higher_is_better: bool) -> float:
    """A threshold in the scores' own sense as a goodness level."""
    # Scores are float32: a threshold typed as 0.7 must accept a score stored as float32(0.7).
    # Beyond float32's range the cast gives +-inf, at which padding (-inf goodness) would pass.
    in_range = abs(threshold) <= float(np.finfo(np.float32).max)
    level = float(np.float32(threshold)) if in_range else float(threshold)
    return level if higher_is_better else -level


def rejection_positions(goodness: np.ndarray, level: float) -> np.ndarray:
    """``(Q,)`` int64 first rank of ``goodness`` ``(Q, k)`` below ``level``; ``k`` when none is."""
    if goodness.shape[1] == 0:  # nothing ranked: "no match" comes first
        return np.zeros(goodness.shape[0], dtype=np.int64)
    fails = ~(goodness >= level)
    return np.where(fails.any(axis=1), fails.argmax(axis=1), goodness.shape[1])


def apply_threshold(result: SearchResult, threshold: float) -> np.ndarray:
    """Where "no match" goes in each ranked list.

    Args:
        result: ``(Q, k)`` search result, best first.
        threshold: In the scores' own sense.

    Returns:
        ``(Q,)`` int64 0-based position of the first neighbour whose score is worse than
        ``threshold`` (or that is padding), ``k`` when none is: e.g. scores ``[0.9, 0.7, 0.4]``
        with threshold 0.5 give 2, "no match" ranked third.

    Raises:
        ValueError: ``threshold`` is NaN or infinite.
    """
    level = goodness_level(check_threshold(threshold), result.higher_is_better)
    return rejection_positions(goodness(result), level)


def accepted(result: SearchResult, threshold: float) -> np.ndarray:
    """``(Q,)`` bool: the top-1 neighbour exists and its score is not worse than ``threshold``."""
    return apply_threshold(result, threshold) > 0
