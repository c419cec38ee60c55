"""Open-set evaluation: tune a rejection threshold on validation data, score lists with "no match".

Queries with no label are distractors (their right answer is "no match"). Where validation data
has none, whole classes are held out of the gallery (:func:`~lookalike.search.rejection.
holdout_distractors`) so that their queries become distractors, as at test time. The threshold
that maximises the chosen objective (MAP@K with "no match" as a valid answer, the weighted top-k
score, or accept/reject F1) is kept, beside the percentile rule for comparison.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from lookalike.embed.store import EmbeddingSet
from lookalike.metrics.ranking import DEFAULT_TOPK_WEIGHTS
from lookalike.report.plots import figure_to_png
from lookalike.search.rejection import (
    accept_reject_f1,
    fnmr_at_fmr,
    holdout_distractors,
    map_at_k_with_rejection,
    nearest_positive_scores,
    objective_depth,
    open_set_roc,
    percentile_threshold,
    tune_threshold,
    weighted_topk_with_rejection,
)
from lookalike.search.result import SearchResult
from lookalike.search.topk import search_embeddings
from lookalike.utils.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text

logger = logging.getLogger(__name__)

# Unlabelled gallery images get this label: no query carries it, so they are never a match.
DISTRACTOR = "\x00distractor"
THRESHOLD_FILE = "threshold.json"


@dataclass
class RejectionSpec:
    """How queries are rejected ("no match").

    Attributes:
        threshold: Fixed threshold in the metric's own sense; None: no rejection (or the one
            stored with ``index``).
        index: Index folder whose stored threshold is used when ``threshold`` is None.
        objective: What tuning maximises: "map@5" (any "map@K"), "weighted_topk" or "f1".
        holdout_fraction: Share of classes held out of the gallery to make distractors when the
            validation queries have none.
        percentile: Percentile rule reported beside the tuned threshold: accept this percentage
            of genuine queries' nearest-positive scores.
        seed: Seed of the held-out classes.
    """

    threshold: float | None = None
    index: str | None = None
    objective: str = "map@5"
    holdout_fraction: float = 0.3
    percentile: float = 90.0
    seed: int = 0


@dataclass
class ThresholdOutcome:
    """A tuned threshold and the evidence for it.

    Attributes:
        threshold: The threshold maximising the objective.
        objective: The objective's name.
        value: Its value at the threshold.
        baseline: Its value without rejection.
        percentile_threshold: The percentile rule's threshold.
        percentile_value: The objective's value there.
        held_out_classes: Classes held out of the gallery to make distractors (empty if given).
        curve: ``(T, 2)`` rows of ``(threshold, objective)``.
        operating_points: FNMR at FMR 1% and 0.1%: ``[{target_fmr, threshold, fmr, fnmr}]``.
        metric: The metric the scores are in.
    """

    threshold: float
    objective: str
    value: float
    baseline: float
    percentile_threshold: float
    percentile_value: float
    held_out_classes: list[str]
    curve: np.ndarray
    operating_points: list[dict[str, float]] = field(default_factory=list)
    metric: str = "cosine"

    def save(self, folder: str | Path) -> Path:
        """Write ``threshold.json`` (everything but the curve, which goes to ``threshold_curve.csv``)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        summary = {key: value for key, value in asdict(self).items() if key != "curve"}
        atomic_write_json(folder / THRESHOLD_FILE, summary)
        rows = "\n".join(f"{t:.8g},{v:.8g}" for t, v in self.curve)
        atomic_write_text(folder / "threshold_curve.csv", f"threshold,{self.objective}\n{rows}\n")
        atomic_write_bytes(folder / "threshold.png", figure_to_png(self.plot()))
        return folder / THRESHOLD_FILE

    def plot(self) -> Figure:
        """The objective against the threshold, with the tuned and percentile thresholds marked."""
        figure = Figure(figsize=(6.4, 4.0))
        axes = figure.add_subplot()
        axes.plot(self.curve[:, 0], self.curve[:, 1], color="tab:blue", label=self.objective)
        axes.axhline(self.baseline, color="grey", linestyle=":", label="no rejection")
        axes.axvline(self.threshold, color="tab:red", label=f"tuned {self.threshold:.4f}")
        axes.axvline(
            self.percentile_threshold, color="tab:green", linestyle="--",
            label=f"percentile rule {self.percentile_threshold:.4f}",
        )
        axes.set_xlabel(f"threshold ({self.metric} score)")
        axes.set_ylabel(self.objective)
        axes.legend(fontsize="small")
        axes.grid(alpha=0.3)
        figure.tight_layout()
        return figure


def gallery_labels_with_distractors(gallery: EmbeddingSet) -> list[str]:
    """Gallery labels, with unlabelled images given a label no query has."""
    return [DISTRACTOR if label is None else str(label) for label in gallery.labels]


def objective_value(
    result: SearchResult,
    query_labels: list[str | None],
    gallery_labels: list[str],
    objective: str,
    threshold: float | None,
    weights: Mapping[int, float] | None = None,
) -> float:
    """The objective of lists with "no match" at ``threshold`` (None: no rejection)."""
    if threshold is None:
        # A threshold below every score accepts all: the plain lists.
        finite = result.scores[np.isfinite(result.scores)]
        threshold = float(finite.min() if result.higher_is_better else finite.max()) if finite.size else 0.0
        threshold = float(np.nextafter(np.float32(threshold), np.float32(-np.inf if result.higher_is_better else np.inf)))
    if objective == "f1":
        return accept_reject_f1(result, query_labels, gallery_labels, threshold)
    if objective == "weighted_topk":
        return weighted_topk_with_rejection(result, query_labels, gallery_labels, threshold, weights)
    return map_at_k_with_rejection(result, query_labels, gallery_labels, threshold, int(objective[4:]))


def tune_rejection(
    query: EmbeddingSet,
    gallery: EmbeddingSet,
    spec: RejectionSpec,
    metric: str = "cosine",
    exclude_self: bool = False,
    weights: Mapping[int, float] | None = None,
) -> ThresholdOutcome:
    """Choose the rejection threshold on validation query/gallery embeddings.

    Args:
        query: Validation queries; unlabelled ones are distractors.
        gallery: Validation gallery; unlabelled images are distractors.
        spec: Objective, hold-out fraction and percentile.
        metric: "cosine", "ip", "l2" or "l1".
        exclude_self: Queries are gallery images (matched by id).
        weights: Weighted top-k weights.
    """
    weights = DEFAULT_TOPK_WEIGHTS if weights is None else weights
    query_labels: list[str | None] = [None if label is None else str(label) for label in query.labels]
    held_out: list[str] = []
    if all(label is not None for label in query_labels):
        keep, held = holdout_distractors(
            query_labels, gallery.labels, spec.holdout_fraction, seed=spec.seed
        )
        held_out = [str(label) for label in held]
        gallery = gallery.select(np.flatnonzero(keep))
        query_labels = [None if label in held else label for label in query_labels]
        logger.info("held out %d classes of the gallery as distractors", len(held_out))
    if all(label is None for label in query_labels) or all(label is not None for label in query_labels):
        raise ValueError(
            "tuning a threshold needs both genuine and distractor queries; give unlabelled "
            "distractor queries or a holdout_fraction in (0, 1)"
        )
    depth = objective_depth(spec.objective, weights)
    result = search_embeddings(query, gallery, k=min(depth, len(gallery)), metric=metric, exclude_self=exclude_self)
    labels = gallery_labels_with_distractors(gallery)
    threshold, curve = tune_threshold(result, query_labels, labels, spec.objective, weights=weights)
    genuine_scores = nearest_positive_scores(result, query_labels, labels)
    rule = percentile_threshold(genuine_scores, spec.percentile, result.higher_is_better) if np.isfinite(genuine_scores).any() else threshold
    points = [p._asdict() for p in fnmr_at_fmr(result, query_labels, labels, (1e-2, 1e-3))]
    return ThresholdOutcome(
        threshold=threshold,
        objective=spec.objective,
        value=objective_value(result, query_labels, labels, spec.objective, threshold, weights),
        baseline=objective_value(result, query_labels, labels, spec.objective, None, weights),
        percentile_threshold=rule,
        percentile_value=objective_value(result, query_labels, labels, spec.objective, rule, weights),
        held_out_classes=held_out,
        curve=curve,
        operating_points=points,
        metric=metric,
    )


def rejection_metrics(
    result: SearchResult,
    query: EmbeddingSet,
    gallery: EmbeddingSet,
    threshold: float,
    map_at: int = 5,
    weights: Mapping[int, float] | None = None,
) -> dict[str, Any]:
    """Open-set metrics of a ranking at ``threshold``, with the no-rejection values beside them.

    Keys: ``map@K``/``weighted_topk``/``f1`` with suffix ``_rejection`` (at the threshold) and
    ``_no_rejection``; ``fnmr@fmr=0.01`` and ROC AUC when there are distractor queries.
    """
    query_labels = [None if label is None else str(label) for label in query.labels]
    labels = gallery_labels_with_distractors(gallery)
    metrics: dict[str, Any] = {"threshold": float(threshold)}
    for objective in (f"map@{map_at}", "weighted_topk", "f1"):
        metrics[f"{objective}_no_rejection"] = objective_value(result, query_labels, labels, objective, None, weights)
        metrics[f"{objective}_rejection"] = objective_value(result, query_labels, labels, objective, threshold, weights)
    distractors = sum(label is None or label not in set(labels) for label in query_labels)
    metrics["n_distractor_queries"] = int(distractors)
    if 0 < distractors < len(query_labels):
        fmr, tmr, _ = open_set_roc(result, query_labels, labels)
        metrics["open_set_auc"] = float(np.trapezoid(tmr, fmr))
        point = fnmr_at_fmr(result, query_labels, labels, (1e-2,))[0]
        metrics["fnmr@fmr=0.01"] = point.fnmr
    return metrics
