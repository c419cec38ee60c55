"""Which similarity ranks best: every candidate metric scored on validation data, the best kept.

With L2-normalised embeddings cosine, inner product and L2 give one ranking
(``|a - b|^2 = 2 - 2 a.b``), so only L1 differs; without normalisation (``model.normalize=false``)
the norms count and all four can differ. :func:`choose_metric` ranks a validation split once per
candidate metric (exact, :func:`lookalike.ranking.rank`), scores each ranking with the same
retrieval metrics as an evaluation, and keeps the metric whose monitored value is highest (ties go
to the earlier candidate, cosine first). The :class:`MetricChoice` it returns is stored with an
index (``index.json`` ``extra.metric_choice``) or as ``metric_choice.json`` in a run folder, so the
choice and all four validation scores travel with what was built.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypedDict

import numpy as np

from lookalike.index.metrics import get_metric
from lookalike.metrics.retrieval import metrics_depth, retrieval_metrics
from lookalike.ranking import rank
from lookalike.utils.atomic import atomic_write_json
from lookalike.utils.readers import read_json_object

AUTO_METRIC = "auto"
"""The metric name that asks for :func:`choose_metric`."""
CANDIDATE_METRICS: tuple[str, ...] = ("cosine", "ip", "l2", "l1")
METRIC_CHOICE_FILE = "metric_choice.json"
DEFAULT_MONITOR = "map@r"


@dataclass
class MetricChoice:
    """The metric chosen on validation data, and every candidate's scores.

    Attributes:
        metric: The chosen metric's name.
        monitor: The retrieval metric compared ("map@r", "recall@1" ...).
        split: What was scored ("val", "test" when there was no validation split ...).
        scores: ``{metric: {retrieval metric: value}}`` of every candidate, in candidate order.
        n_queries: Validation queries scored.
        n_gallery: Validation gallery size.
        note: Anything the reader should know (e.g. that the test split chose, optimistically).
    """

    metric: str
    monitor: str
    split: str
    scores: dict[str, dict[str, float]] = field(default_factory=dict)
    n_queries: int = 0
    n_gallery: int = 0
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-able fields (NaN stored as None)."""
        data = asdict(self)
        data["scores"] = {
            name: {key: _json_number(value) for key, value in values.items()}
            for name, values in self.scores.items()
        }
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MetricChoice:
        """The inverse of :meth:`to_dict`.

        Raises:
            ValueError: A field is missing or the chosen metric is unknown.
        """
        try:
            choice = cls(
                metric=str(data["metric"]),
                monitor=str(data["monitor"]),
                split=str(data["split"]),
                scores={
                    str(name): {
                        str(k): float("nan") if v is None else float(v) for k, v in values.items()
                    }
                    for name, values in dict(data.get("scores", {})).items()
                },
                n_queries=int(data.get("n_queries", 0)),
                n_gallery=int(data.get("n_gallery", 0)),
                note=str(data.get("note", "")),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"not a metric choice ({exc!r})") from None
        get_metric(choice.metric)
        return choice

    def save(self, folder: str | Path) -> Path:
        """Write ``folder/metric_choice.json`` atomically; returns its path."""
        path = Path(folder) / METRIC_CHOICE_FILE
        atomic_write_json(path, self.to_dict())
        return path

    @classmethod
    def load(cls, path: str | Path) -> MetricChoice:
        """Read a ``metric_choice.json`` (or the one in a folder).

        Raises:
            ValueError: The file is not a metric choice (the message names it).
        """
        path = Path(path)
        if path.is_dir():
            path = path / METRIC_CHOICE_FILE
        data = read_json_object(path, "run the choice again (metric=auto)")
        try:
            return cls.from_dict(data)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None

    def table(self, columns: Sequence[str] | None = None) -> tuple[list[str], list[list[str]]]:
        """Header and rows (one per candidate, the chosen one marked) for printing."""
        keys = list(columns or next(iter(self.scores.values()), {}).keys())
        header = ["metric", *keys, "chosen"]
        rows = [
            [name, *(f"{values.get(key, float('nan')):.4f}" for key in keys),
             "yes" if name == self.metric else ""]
            for name, values in self.scores.items()
        ]
        return header, rows


class ChoiceOptions(TypedDict, total=False):
    """The settings of a choice beyond the data, as :func:`choose_metric` takes and documents
    them (for callers that pass them on)."""

    monitor: str
    candidates: Sequence[str]
    recall_ks: Sequence[int]
    map_at_k: int
    weights: Mapping[int, float] | None
    split: str
    device: str
    note: str


def choose_metric(
    query_embeddings: np.ndarray,
    gallery_embeddings: np.ndarray,
    query_labels: Sequence[str | None],
    gallery_labels: Sequence[str | None],
    *,
    exclude_rows: np.ndarray | None = None,
    monitor: str = DEFAULT_MONITOR,
    candidates: Sequence[str] = CANDIDATE_METRICS,
    recall_ks: Sequence[int] = (1, 5, 10),
    map_at_k: int = 5,
    weights: Mapping[int, float] | None = None,
    split: str = "val",
    device: str = "cpu",
    note: str = "",
) -> MetricChoice:
    """Rank a labelled validation split with each candidate metric and keep the best.

    Args:
        query_embeddings: ``(Q, D)`` validation queries.
        gallery_embeddings: ``(N, D)`` validation gallery.
        query_labels: ``Q`` labels (unlabelled queries are left out of the scores).
        gallery_labels: ``N`` labels (None: a distractor image).
        exclude_rows: ``(Q,)`` gallery row of each query's own image, -1 where none (all-vs-all).
        monitor: A key of :func:`~lookalike.metrics.retrieval_metrics`'s summary (higher is
            better), e.g. "map@r", "recall@1", "map@5", "weighted_topk".
        candidates: Metric names tried, in tie-breaking order.
        recall_ks: K values of Recall@K reported.
        map_at_k: K of MAP@K.
        weights: Weighted top-k weights.
        split: What the data is, for the record ("val").
        device: Torch device of the exact ranking.
        note: Kept with the choice.

    Returns:
        The :class:`MetricChoice`.

    Raises:
        ValueError: No candidate, an unknown metric or monitor, or no labelled query with a
            positive in the gallery (nothing to choose on).
    """
    names = [get_metric(name).name for name in candidates]
    if not names:
        raise ValueError("no candidate metric to choose from; give at least one of cosine, ip, l2, l1")
    depth = metrics_depth(recall_ks, (10,), map_at_k, weights)
    scores: dict[str, dict[str, float]] = {}
    for name in dict.fromkeys(names):
        ranking = rank(
            query_embeddings, gallery_embeddings, query_labels, gallery_labels,
            metric=name, k=min(depth, len(gallery_embeddings)), exclude_rows=exclude_rows,
            device=device,
        )
        summary = retrieval_metrics(ranking, ks=recall_ks, map_at_k=map_at_k, weights=weights).summary
        if monitor not in summary or monitor.startswith("n_"):  # n_*: counts, not metrics
            raise ValueError(
                f"unknown metric to monitor {monitor!r}; valid: "
                f"{', '.join(k for k in summary if not k.startswith('n_'))}"
            )
        scores[name] = {key: float(value) for key, value in summary.items()}
    monitored = {name: values[monitor] for name, values in scores.items()}
    if all(math.isnan(value) for value in monitored.values()):
        raise ValueError(
            f"no {split} query has a positive in the {split} gallery; cannot choose a metric "
            "(give labelled validation data with two or more images per class)"
        )
    best = max(monitored, key=lambda name: -math.inf if math.isnan(monitored[name]) else monitored[name])
    return MetricChoice(
        metric=best,
        monitor=monitor,
        split=split,
        scores=scores,
        n_queries=len(query_embeddings),
        n_gallery=len(gallery_embeddings),
        note=note,
    )


def _json_number(value: float) -> float | None:
    return None if isinstance(value, float) and math.isnan(value) else value
