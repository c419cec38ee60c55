"""Rules that pick a rejection threshold from validation results, by name.

Each entry of :data:`THRESHOLD_RULES` is a function
``rule(result, query_labels, gallery_labels, **options) -> threshold`` (scores' own sense); every
rule takes ``exclude_rows`` (each query's own gallery row in an all-vs-all search, see
:func:`~lookalike.search.open_set_scores.relevance`):

- ``"tuned"``: the threshold maximising an open-set objective
  (:func:`~lookalike.search.thresholds.tune_threshold`; option ``objective``, ``weights``);
- ``"percentile"``: accept ``q`` percent of genuine queries' nearest-positive scores
  (:func:`~lookalike.search.thresholds.percentile_threshold`; option ``q``);
- ``"roc_corner"``: the point of the open-set ROC (accepting a query on its top-1 score, genuine
  queries positive) closest to the ideal corner (FMR 0, TMR 1), a common rule for a threshold
  without an objective (Zweig & Campbell, "Receiver-operating characteristic (ROC) plots: a
  fundamental evaluation tool in clinical medicine", Clin. Chem. 1993, the "closest to (0, 1)"
  criterion).

The rules are reported side by side by ``tune-threshold`` and ``evaluate``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from lookalike.index.result import SearchResult
from lookalike.registry import Registry
from lookalike.search.open_set_scores import ExcludeRows, GalleryLabels, QueryLabels, open_set_roc
from lookalike.search.thresholds import (
    nearest_positive_scores,
    percentile_threshold,
    tune_threshold,
)

ThresholdRule = Callable[..., float]
THRESHOLD_RULES = Registry[float]("threshold rule")


@THRESHOLD_RULES.register("tuned")
def tuned_rule(
    result: SearchResult,
    query_labels: QueryLabels,
    gallery_labels: GalleryLabels,
    objective: str = "map@5",
    weights: Mapping[int, float] | None = None,
    exclude_rows: ExcludeRows = None,
) -> float:
    """The threshold maximising ``objective`` (the most lenient among ties)."""
    threshold, _ = tune_threshold(
        result, query_labels, gallery_labels, objective, weights=weights, exclude_rows=exclude_rows
    )
    return threshold


@THRESHOLD_RULES.register("percentile")
def percentile_rule(
    result: SearchResult,
    query_labels: QueryLabels,
    gallery_labels: GalleryLabels,
    q: float = 90.0,
    exclude_rows: ExcludeRows = None,
) -> float:
    """The strictest observed score that accepts ``q`` percent of genuine queries' nearest
    positives (``exclude_rows`` changes nothing here: excluded rows are not in the lists)."""
    scores = nearest_positive_scores(result, query_labels, gallery_labels)
    return percentile_threshold(scores, q, result.higher_is_better)


@THRESHOLD_RULES.register("roc_corner")
def roc_corner_threshold(
    result: SearchResult,
    query_labels: QueryLabels,
    gallery_labels: GalleryLabels,
    exclude_rows: ExcludeRows = None,
) -> float:
    """The threshold of the open-set ROC point nearest to (FMR 0, TMR 1).

    A query is accepted when its top-1 score is not worse than the threshold; FMR is the share
    of distractor queries accepted, TMR the share of genuine ones. Among the thresholds at the
    observed top-1 scores (and one past the best, rejecting all) the one minimising
    ``FMR^2 + (1 - TMR)^2`` is returned; ties go to the most lenient.

    Raises:
        ValueError: No genuine or no distractor query (the ROC needs both), or no query with a
            finite top-1 score.
    """
    fmr, tmr, thresholds = open_set_roc(result, query_labels, gallery_labels, exclude_rows)
    distance = fmr**2 + (1.0 - tmr) ** 2
    # ROC points run from strictest to most lenient: the last minimum is the most lenient.
    best = len(distance) - 1 - int(np.argmin(distance[::-1]))
    threshold = float(thresholds[best])
    if np.isfinite(threshold):
        return threshold
    # Rejecting every query: just past the best observed top-1 score.
    finite = thresholds[np.isfinite(thresholds)]
    if finite.size == 0:
        raise ValueError("no query has a finite top-1 score; there is no threshold to choose")
    edge = finite.max() if result.higher_is_better else finite.min()
    direction = np.inf if result.higher_is_better else -np.inf
    return float(np.nextafter(np.float32(edge), np.float32(direction)))


def apply_rule(
    name: str,
    result: SearchResult,
    query_labels: QueryLabels,
    gallery_labels: GalleryLabels,
    **options: object,
) -> float:
    """The threshold the rule registered as ``name`` picks (see the module docstring).

    Raises:
        ValueError: An unknown rule (the valid names are listed) or options it does not take.
    """
    return THRESHOLD_RULES.create(name, result, query_labels, gallery_labels, **options)
