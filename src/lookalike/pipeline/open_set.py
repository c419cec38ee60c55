"""Open-set evaluation: tune a rejection threshold on validation data, score lists with "no match".

Queries with no label are distractors (their right answer is "no match"). Where validation data
has none, whole classes are held out of the gallery (:func:`~lookalike.search.thresholds.
holdout_distractors`) so that their queries become distractors, as at test time. The threshold
that maximises the chosen objective (MAP@K with "no match" as a valid answer, the weighted top-k
score, or accept/reject F1) is kept, beside the percentile rule and the ROC corner rule (the ROC
point closest to FMR 0, TMR 1; :mod:`lookalike.search.threshold_rules`) for comparison.
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
from lookalike.index import get_metric, set_index_threshold
from lookalike.index.io import check_index_folder
from lookalike.index.result import SearchResult
from lookalike.metrics.ranking import DEFAULT_TOPK_WEIGHTS
from lookalike.ranking import Ranking
from lookalike.report.plots import figure_to_png
from lookalike.search.open_set_scores import (
    create_objective,
    fnmr_at_fmr,
    objective_depth,
    open_set_roc,
    relevance,
)
from lookalike.search.threshold_rules import roc_corner_threshold
from lookalike.search.thresholds import (
    holdout_distractors,
    nearest_positive_scores,
    percentile_threshold,
    tune_threshold,
)
from lookalike.search.topk import search_embeddings, self_exclusion
from lookalike.utils.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text
from lookalike.utils.progress import ProgressFactory, tracker
from lookalike.utils.vectors import check_vectors

logger = logging.getLogger(__name__)

THRESHOLD_FILE = "threshold.json"
THRESHOLD_CURVE_FILE = "threshold_curve.csv"
THRESHOLD_PLOT_FILE = "threshold.png"


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
        roc_corner_threshold: The ROC corner rule's threshold (None without distractors).
        roc_corner_value: The objective's value there.
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
    roc_corner_threshold: float | None = None
    roc_corner_value: float | None = None

    def save(self, folder: str | Path) -> Path:
        """Write ``threshold.json`` (everything but the curve, which goes to ``threshold_curve.csv``)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        summary = {key: value for key, value in asdict(self).items() if key != "curve"}
        atomic_write_json(folder / THRESHOLD_FILE, summary)
        rows = "\n".join(f"{t:.8g},{v:.8g}" for t, v in self.curve)
        atomic_write_text(folder / THRESHOLD_CURVE_FILE, f"threshold,{self.objective}\n{rows}\n")
        atomic_write_bytes(folder / THRESHOLD_PLOT_FILE, figure_to_png(self.plot()))
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
        if self.roc_corner_threshold is not None:
            axes.axvline(
                self.roc_corner_threshold, color="tab:purple", linestyle="-.",
                label=f"ROC corner {self.roc_corner_threshold:.4f}",
            )
        axes.set_xlabel(f"threshold ({self.metric} score)")
        axes.set_ylabel(self.objective)
        axes.legend(fontsize="small")
        axes.grid(alpha=0.3)
        figure.tight_layout()
        return figure


def objective_value(
    result: SearchResult,
    query_labels: list[str | None],
    gallery_labels: list[str | None],
    objective: str,
    threshold: float | None,
    weights: Mapping[int, float] | None = None,
    exclude_rows: np.ndarray | None = None,
) -> float:
    """The objective (a name of :data:`~lookalike.search.open_set_scores.OBJECTIVES`) of lists
    with "no match" at ``threshold`` (None: no rejection)."""
    if threshold is None:
        # A threshold below every score accepts all: the plain lists.
        finite = result.scores[np.isfinite(result.scores)]
        threshold = float(finite.min() if result.higher_is_better else finite.max()) if finite.size else 0.0
        threshold = float(np.nextafter(np.float32(threshold), np.float32(-np.inf if result.higher_is_better else np.inf)))
    scorer = create_objective(objective, weights)
    return scorer.evaluate(result, query_labels, gallery_labels, threshold, exclude_rows)


def tune_rejection(
    query: EmbeddingSet,
    gallery: EmbeddingSet,
    spec: RejectionSpec,
    metric: str = "cosine",
    exclude_self: bool = False,
    weights: Mapping[int, float] | None = None,
    progress: ProgressFactory | None = None,
) -> ThresholdOutcome:
    """Choose the rejection threshold on validation query/gallery embeddings.

    Args:
        query: Validation queries; unlabelled ones are distractors.
        gallery: Validation gallery; unlabelled images are distractors.
        spec: Objective, hold-out fraction and percentile.
        metric: "cosine", "ip", "l2" or "l1".
        exclude_self: Queries are gallery images (matched by id).
        weights: Weighted top-k weights.
        progress: Asked for one step, "searching" over the queries.
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
    result = search_embeddings(
        query, gallery, k=depth, metric=metric, exclude_self=exclude_self,
        progress=tracker(progress, "searching", len(query)),
    )
    labels = list(gallery.labels)  # None: a distractor image, never a match
    own = self_exclusion(query.ids, gallery.ids) if exclude_self else None
    threshold, curve = tune_threshold(
        result, query_labels, labels, spec.objective, weights=weights, exclude_rows=own
    )
    genuine_scores = nearest_positive_scores(result, query_labels, labels)
    rule = percentile_threshold(genuine_scores, spec.percentile, result.higher_is_better) if np.isfinite(genuine_scores).any() else threshold
    points = [p._asdict() for p in fnmr_at_fmr(result, query_labels, labels, (1e-2, 1e-3), own)]
    corner = roc_corner_threshold(result, query_labels, labels, own)
    return ThresholdOutcome(
        threshold=threshold,
        objective=spec.objective,
        value=objective_value(result, query_labels, labels, spec.objective, threshold, weights, own),
        baseline=objective_value(result, query_labels, labels, spec.objective, None, weights, own),
        percentile_threshold=rule,
        percentile_value=objective_value(result, query_labels, labels, spec.objective, rule, weights, own),
        held_out_classes=held_out,
        curve=curve,
        operating_points=points,
        metric=metric,
        roc_corner_threshold=corner,
        roc_corner_value=objective_value(result, query_labels, labels, spec.objective, corner, weights, own),
    )


@dataclass
class SavedThreshold:
    """A tuned threshold written to disk (and, when asked, stored in an index).

    Attributes:
        outcome: The threshold and the evidence for it.
        path: ``threshold.json``; ``threshold_curve.csv`` and ``threshold.png`` lie beside it.
        plot: ``threshold.png``, the objective against the threshold.
        index: The index folder the threshold was stored in, None when none was given.
    """

    outcome: ThresholdOutcome
    path: Path
    plot: Path
    index: Path | None = None


def tune_and_save_threshold(
    query: EmbeddingSet | str | Path,
    gallery: EmbeddingSet | str | Path,
    spec: RejectionSpec | None = None,
    metric: str = "cosine",
    output: str | Path = "threshold",
    index: str | Path | None = None,
    exclude_self: bool | None = None,
    weights: Mapping[int, float] | None = None,
    progress: ProgressFactory | None = None,
) -> SavedThreshold:
    """Tune the rejection threshold (:func:`tune_rejection`), save it, and store it in an index.

    ``search``, ``submission`` and ``evaluate`` then apply the index's stored threshold by
    default. The index folder is checked before anything is written: a missing or incomplete
    index, one built with another metric, or one of another model's embeddings fails first.

    Args:
        query: Validation query embeddings or their folder; unlabelled ones are distractors.
        gallery: Validation gallery embeddings or their folder.
        spec: Objective, hold-out fraction, percentile and seed; None: ``RejectionSpec()``.
        metric: "cosine", "ip", "l2" or "l1"; the index's metric when ``index`` is given.
        output: Folder for ``threshold.json``, ``threshold_curve.csv`` and ``threshold.png``.
        index: Index folder to store the threshold in.
        exclude_self: Queries are gallery images (matched by id) whose own rows are dropped;
            None: when every query id is a gallery id.
        weights: Weighted top-k weights.
        progress: Asked for one step, "searching" over the queries.

    Raises:
        ValueError: The index's metric or model differs from the embeddings', or the data
            cannot make both genuine and distractor queries.
        FileNotFoundError: The embeddings, or a file of the index folder, do not exist.
    """
    cosine = get_metric(metric).normalize
    names = ("the query embeddings" if isinstance(query, EmbeddingSet) else str(query),
             "the gallery embeddings" if isinstance(gallery, EmbeddingSet) else str(gallery))
    query = query if isinstance(query, EmbeddingSet) else EmbeddingSet.load(query)
    gallery = gallery if isinstance(gallery, EmbeddingSet) else EmbeddingSet.load(gallery)
    check_vectors(query.embeddings, names[0], cosine)
    check_vectors(gallery.embeddings, names[1], cosine)
    if index is not None:
        _check_threshold_index(index, metric, gallery.fingerprint)
    if exclude_self is None:
        exclude_self = set(query.ids) <= set(gallery.ids)
    outcome = tune_rejection(
        query, gallery, spec or RejectionSpec(), metric, exclude_self, weights, progress
    )
    path = outcome.save(output)
    if index is not None:
        set_index_threshold(index, outcome.threshold)
    return SavedThreshold(
        outcome, path, path.parent / THRESHOLD_PLOT_FILE, None if index is None else Path(index)
    )


def _check_threshold_index(index: str | Path, metric: str, fingerprint: str | None) -> None:
    """Refuse an index the threshold would be wrong for, before anything is written."""
    stored = check_index_folder(index)
    index_metric = get_metric(stored["metric"]).name
    if index_metric != get_metric(metric).name:
        raise ValueError(
            f"the index at {index} ranks by {index_metric} but the threshold is tuned on "
            f"{get_metric(metric).name} scores; tune with metric={index_metric!r}"
        )
    stored_fingerprint = stored.get("fingerprint")
    if fingerprint and stored_fingerprint and fingerprint != stored_fingerprint:
        raise ValueError(
            f"the index at {index} holds embeddings of model {stored_fingerprint} but the "
            f"gallery embeddings come from {fingerprint}; tune on embeddings of the index's model"
        )


def rejection_metrics(
    ranking: Ranking,
    threshold: float,
    k: int | None = None,
    map_at: int = 5,
    weights: Mapping[int, float] | None = None,
) -> dict[str, Any]:
    """Open-set metrics of a ranking at ``threshold``, with the no-rejection values beside them.

    Keys: ``map@K``/``weighted_topk``/``f1`` with suffix ``_rejection`` (at the threshold) and
    ``_no_rejection``; ``fnmr@fmr=0.01``, ROC AUC, and the ROC corner rule's threshold
    (``roc_corner_threshold``) with each objective there (suffix ``_roc_corner``) when there are
    distractor queries.

    Args:
        ranking: The run's ranking; unlabelled queries are distractors.
        threshold: The rejection threshold, in the metric's own sense.
        k: Neighbours per list (the served depth); all the ranking keeps when None.
        map_at: K of MAP@K.
        weights: Weighted top-k score weights.
    """
    result = ranking.neighbours if k is None else ranking.neighbours.top(k)
    classes = ranking.codes.classes
    query_labels = [classes[code] if code >= 0 else None for code in ranking.codes.query.tolist()]
    labels = [classes[code] if code >= 0 else None for code in ranking.codes.gallery.tolist()]
    own = ranking.exclude_rows
    metrics: dict[str, Any] = {"threshold": float(threshold)}
    for objective in (f"map@{map_at}", "weighted_topk", "f1"):
        metrics[f"{objective}_no_rejection"] = objective_value(result, query_labels, labels, objective, None, weights, own)
        metrics[f"{objective}_rejection"] = objective_value(result, query_labels, labels, objective, threshold, weights, own)
    distractors = int((~relevance(result, query_labels, labels, 1, own).genuine).sum())
    metrics["n_distractor_queries"] = distractors
    if 0 < distractors < len(query_labels):
        fmr, tmr, _ = open_set_roc(result, query_labels, labels, own)
        metrics["open_set_auc"] = float(np.trapezoid(tmr, fmr))
        point = fnmr_at_fmr(result, query_labels, labels, (1e-2,), exclude_rows=own)[0]
        metrics["fnmr@fmr=0.01"] = point.fnmr
        corner = roc_corner_threshold(result, query_labels, labels, own)
        metrics["roc_corner_threshold"] = corner
        for objective in (f"map@{map_at}", "weighted_topk", "f1"):
            metrics[f"{objective}_roc_corner"] = objective_value(
                result, query_labels, labels, objective, corner, weights, own
            )
    return metrics
