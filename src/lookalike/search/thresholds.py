"""Choosing a rejection threshold: tuned for an open-set objective, or the percentile rule.

Tuning needs distractors among the validation queries; where there are none,
:func:`holdout_distractors` removes whole classes from the gallery so that their queries become
distractors, as at test time.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence

import numpy as np

from lookalike.index.result import SearchResult
from lookalike.search.open_set_scores import (
    AcceptRejectF1,
    ExcludeRows,
    GalleryLabels,
    QueryLabels,
    create_objective,
    relevance,
)
from lookalike.search.rejection import goodness, goodness_level, rejection_positions


def _default_candidates(observed: np.ndarray, max_candidates: int) -> np.ndarray:
    """Goodness thresholds giving every distinct acceptance pattern (or ``max_candidates`` of them):
    midpoints between consecutive observed values, the lowest value and one above the highest,
    all float32 so that they survive a round trip through a float32 score file."""
    values = np.unique(observed[np.isfinite(observed)]).astype(np.float32)
    if values.size == 0:
        raise ValueError("the result holds no finite scores to choose a threshold from")
    if values.size > max_candidates:
        values = np.unique(np.quantile(values, np.linspace(0.0, 1.0, max_candidates)))
        values = values.astype(np.float32)
    lower, upper = values[:-1].astype(np.float64), values[1:].astype(np.float64)
    # A midpoint that rounds down onto the lower value would merge two acceptance patterns.
    middle = ((lower + upper) / 2.0).astype(np.float32)
    middle = np.where(middle > values[:-1], middle, values[1:])
    spread = float(values[-1]) - float(values[0])
    above = np.float32(float(values[-1]) + max(1e-6, 1e-3 * spread))
    above = max(above, np.nextafter(values[-1], np.float32(np.inf)))
    return np.concatenate([values[:1], middle, [above]]).astype(np.float64)


def tune_threshold(
    result: SearchResult,
    query_labels: QueryLabels,
    gallery_labels: GalleryLabels,
    objective: str = "map@5",
    candidates: Sequence[float] | np.ndarray | None = None,
    max_candidates: int = 512,
    weights: Mapping[int, float] | None = None,
    exclude_rows: ExcludeRows = None,
) -> tuple[float, np.ndarray]:
    """The rejection threshold maximising an open-set objective on labelled queries.

    Args:
        result: ``(Q, K)`` search result of validation queries (distractors included).
        query_labels: ``Q`` labels, None for known distractors.
        gallery_labels: ``N`` labels.
        objective: A name of :data:`~lookalike.search.open_set_scores.OBJECTIVES`: "map@K"
            (e.g. "map@5"), "weighted_topk" or "f1".
        candidates: Thresholds to try, in the scores' sense; by default midpoints between the
            distinct scores the objective looks at (capped to ``max_candidates`` quantiles), the
            lowest score (accept all) and one past the best (reject all).
        max_candidates: Cap on the default candidates.
        weights: Cut-off weights of "weighted_topk"; :data:`DEFAULT_TOPK_WEIGHTS` when None.
        exclude_rows: ``(Q,)`` gallery row left out of each query's list (its own image in an
            all-vs-all search), -1 where none; see
            :func:`~lookalike.search.open_set_scores.relevance`.

    Returns:
        The best threshold (the most lenient among ties) and a ``(T, 2)`` float64 table of
        ``(threshold, objective value)`` rows sorted by threshold.

    Raises:
        ValueError: An unknown objective, no finite score, or "f1" without a genuine query (F1
            is 0 at every threshold then, and the tie would go to accepting every distractor).
    """
    scorer = create_objective(objective, weights)
    table = relevance(result, query_labels, gallery_labels, scorer.depth, exclude_rows)
    if isinstance(scorer, AcceptRejectF1) and not table.genuine.any():
        raise ValueError(
            "the f1 objective needs a genuine query (one whose class is in the gallery); "
            "with distractors only, tune for map@K or weighted_topk"
        )
    scores = goodness(result)
    hib = result.higher_is_better
    if candidates is None:
        levels = _default_candidates(scores[:, : scorer.depth], max_candidates)
    else:
        levels = np.unique([goodness_level(value, hib) for value in np.asarray(candidates).ravel()])
        if levels.size == 0:
            raise ValueError("candidates is empty; pass at least one threshold or None")
    values = np.array([scorer.score(table, rejection_positions(scores, level)) for level in levels])
    best = int(np.argmax(values))
    thresholds = levels if hib else -levels
    curve = np.stack([thresholds, values], axis=1)
    return float(thresholds[best]), curve[np.argsort(thresholds, kind="stable")]


def nearest_positive_scores(
    result: SearchResult, query_labels: QueryLabels, gallery_labels: GalleryLabels
) -> np.ndarray:
    """``(Q,)`` float64 score of each query's first relevant neighbour; NaN where none is listed."""
    relevant = relevance(result, query_labels, gallery_labels, result.k).relevant
    first = relevant.argmax(axis=1)
    scores = result.scores[np.arange(len(result)), first].astype(np.float64)
    return np.where(relevant.any(axis=1), scores, np.nan)


def percentile_threshold(
    scores_of_nearest_positive: np.ndarray, q: float = 90.0, higher_is_better: bool = True
) -> float:
    """The strictest observed score that still accepts at least ``q`` percent of genuine queries.

    Args:
        scores_of_nearest_positive: ``(Q,)`` e.g. :func:`nearest_positive_scores`; NaN ignored.
        q: Percentage of genuine queries to accept, in ``[0, 100]``.
        higher_is_better: The scores' sense.
    """
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"q must be a percentage in [0, 100], got {q}")
    scores = np.asarray(scores_of_nearest_positive, dtype=np.float64).ravel()
    scores = scores[~np.isnan(scores)]
    if scores.size == 0:
        raise ValueError("no nearest-positive scores given (all NaN or empty)")
    # Best first: the threshold at the n-th best score accepts at least n queries, and any stricter
    # observed score fewer (np.percentile's "lower"/"higher" interpolate over Q - 1 gaps, which
    # can land one score too lenient).
    best_first = np.sort(scores)[::-1] if higher_is_better else np.sort(scores)
    needed = max(1, math.ceil(q * scores.size / 100.0 - 1e-9))
    return float(best_first[needed - 1])


def holdout_distractors(
    query_labels: QueryLabels,
    gallery_labels: GalleryLabels,
    fraction: float,
    seed: int = 0,
) -> tuple[np.ndarray, list[Hashable]]:
    """Make distractors by removing whole classes from the gallery.

    Args:
        query_labels: ``Q`` labels; the classes held out are drawn from those also in the gallery
            (None, an unlabelled query, is no class).
        gallery_labels: ``N`` labels; None marks a distractor image, kept in the gallery.
        fraction: Share of those classes held out, in ``[0, 1]``.
        seed: Seed of the draw.

    Returns:
        ``(N,)`` bool mask of the gallery rows to keep, and the held-out classes (the queries of
        these classes become distractors).
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must lie in [0, 1], got {fraction}")
    gallery_labels = list(gallery_labels)
    in_gallery = set(gallery_labels)
    classes = list(
        dict.fromkeys(label for label in query_labels if label is not None and label in in_gallery)
    )
    count = round(fraction * len(classes))
    chosen = np.random.default_rng(seed).choice(len(classes), size=count, replace=False)
    held_out = [classes[index] for index in sorted(chosen.tolist())]
    held = set(held_out)
    keep = [label is None or label not in held for label in gallery_labels]
    return np.array(keep, dtype=bool), held_out
