"""The retrieval set validated every epoch: its images embedded in one pass, their roles, the
cut-offs its metrics are taken at, and the one exact ranking every epoch's metrics and results
file read."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from lookalike.data.protocols import RetrievalSplit
from lookalike.data.records import ImageSet
from lookalike.metrics.retrieval import metrics_depth, retrieval_metrics
from lookalike.ranking import Ranking, rank

DEFAULT_VAL_KS = (1, 5, 10)
DEFAULT_PRECISION_KS = (10,)
# The summary keys of lookalike.metrics.retrieval.retrieval_metrics besides recall@k/precision@k
# (its default MAP@K cut-off is 5); the query counts are there too.
OTHER_METRIC_NAMES = (
    "map", "map@5", "map@r", "weighted_topk", "n_queries", "n_queries_without_positives"
)


@dataclass
class ValidationSet:
    """A retrieval evaluation embedded in one pass.

    Attributes:
        images: The distinct images to embed (gallery first, then queries not in the gallery).
        labels: Label of each row of ``images``.
        query_rows: ``(Q,)`` rows of ``images`` that are queries.
        gallery_rows: ``(N,)`` rows of ``images`` that form the gallery.
        exclude_self: Queries are in the gallery and must not retrieve their own image.
        ks: Cut-offs of Recall@K.
        precision_ks: Cut-offs of Precision@K (may be empty).
        depth: Neighbours kept per query at least (the per-epoch results files' k); the
            metrics' own depth when that is larger.
    """

    images: ImageSet
    labels: list[str | None]
    query_rows: np.ndarray
    gallery_rows: np.ndarray
    exclude_self: bool
    ks: tuple[int, ...] = DEFAULT_VAL_KS
    precision_ks: tuple[int, ...] = DEFAULT_PRECISION_KS
    depth: int = 0


@dataclass
class ValidationRanking:
    """One validation's exact ranking and the metrics read from it.

    Attributes:
        ranking: The ranking of the embedded queries against the embedded gallery; its
            neighbour rows index ``gallery_rows``.
        query_rows: ``(Q,)`` rows of the validation images ranked as queries (readable ones).
        gallery_rows: ``(N,)`` rows of the validation images that formed the gallery.
        metrics: The summary of :func:`~lookalike.metrics.retrieval.retrieval_metrics` at the
            set's cut-offs (``recall@k``, ``precision@k``, ``map``, ``map@5``, ``map@r`` ...).
    """

    ranking: Ranking
    query_rows: np.ndarray
    gallery_rows: np.ndarray
    metrics: dict[str, float]


def check_cutoffs(ks: Sequence[int], name: str, allow_empty: bool = False) -> tuple[int, ...]:
    """``ks`` sorted and deduplicated; a one-line ``ValueError`` naming ``name`` unless they are
    positive integers (and at least one, unless ``allow_empty``)."""
    values = list(ks)
    if (not values and not allow_empty) or not all(
        isinstance(k, int | np.integer) and not isinstance(k, bool) and k >= 1 for k in values
    ):
        raise ValueError(f"{name} must be a list of positive integers, got {values!r}")
    return tuple(sorted({int(k) for k in values}))


def validation_metric_names(
    ks: Sequence[int] = DEFAULT_VAL_KS, precision_ks: Sequence[int] = DEFAULT_PRECISION_KS
) -> list[str]:
    """The metric keys a validation at these cut-offs reports (what ``trainer.monitor`` picks)."""
    return [
        *(f"recall@{k}" for k in sorted(set(ks))),
        *(f"precision@{k}" for k in sorted(set(precision_ks))),
        *OTHER_METRIC_NAMES,
    ]


def rank_validation(
    val_set: ValidationSet,
    embeddings: np.ndarray,
    embedded: np.ndarray,
    metric: str = "cosine",
) -> ValidationRanking:
    """Rank the val queries against the val gallery (one exact ranking) and score it.

    Args:
        val_set: The val images, their query/gallery roles and the metrics' cut-offs.
        embeddings: ``(N, D)`` float32 embedding of every row of ``val_set.images``.
        embedded: ``(N,)`` bool, False for rows whose image could not be read (left out).
        metric: Similarity for ranking ("cosine", "ip", "l2", "l1").
    """
    gallery_rows = val_set.gallery_rows[embedded[val_set.gallery_rows]]
    query_rows = val_set.query_rows[embedded[val_set.query_rows]]
    position = np.full(len(embedded), -1, dtype=np.int64)
    position[gallery_rows] = np.arange(len(gallery_rows))
    ranking = rank(
        embeddings[query_rows],
        embeddings[gallery_rows],
        [val_set.labels[row] for row in query_rows],
        [val_set.labels[row] for row in gallery_rows],  # None: a distractor, never relevant
        metric=metric,
        k=max(val_set.depth, metrics_depth(val_set.ks, val_set.precision_ks)),
        exclude_rows=position[query_rows] if val_set.exclude_self else None,
    )
    summary = retrieval_metrics(ranking, ks=val_set.ks, precision_ks=val_set.precision_ks).summary
    return ValidationRanking(ranking, query_rows, gallery_rows, summary)


def validation_set(split: RetrievalSplit, which: str) -> ValidationSet | None:
    """The val set of ``split`` ("val": its ``val`` images all-vs-all; "test": its query and
    gallery; "none": ``None``)."""
    if which == "none":
        return None
    if which == "val":
        if split.val is None or not len(split.val):
            raise ValueError(
                "data.val_split is 'val' but the split has no val images; set "
                "data.protocol_args.val_fraction (class_disjoint), give a val split column, "
                "or set data.val_split to 'test' or 'none'"
            )
        gallery = split.val
        query = ImageSet([r for r in split.val.records if r.label is not None], "query")
        exclude_self = True
    elif which == "test":
        gallery, query, exclude_self = split.gallery, split.query, split.exclude_self
    else:
        raise ValueError(f"unknown val_split {which!r}; valid: val, test, none")
    row_of = {record.id: row for row, record in enumerate(gallery.records)}
    records = list(gallery.records)
    query_rows = []
    for record in query.records:
        if record.id not in row_of:
            row_of[record.id] = len(records)
            records.append(record)
        query_rows.append(row_of[record.id])
    images = ImageSet(records, "val")
    return ValidationSet(
        images,
        images.labels,
        np.asarray(query_rows, dtype=np.int64),
        np.arange(len(gallery), dtype=np.int64),
        exclude_self,
    )
