"""Open-set scores: ranked lists with a "no match" answer, and verification-style error rates.

A query is *genuine* when its label occurs in the gallery, else a *distractor* (label None or
unseen). "No match", inserted where :func:`~lookalike.search.rejection.apply_threshold` says, is
the one right answer for a distractor and a wrong one for a genuine query, whose relevant answers
are the gallery items of its class.

The objectives a rejection threshold is tuned for live in :data:`OBJECTIVES`, named as users write
them: ``"map@K"`` (e.g. ``"map@5"``), ``"weighted_topk"`` and ``"f1"``;
:func:`create_objective` builds one. FMR (false match rate) is the fraction of distractors
accepted, FNMR (false non-match rate) the fraction of genuine queries rejected, i.e. whose top-1 is
rejected whether or not that top-1 is correct (ISO/IEC 19795-1 verification-style rates over top-1
scores).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from lookalike.index.result import SearchResult
from lookalike.metrics.ranking import DEFAULT_TOPK_WEIGHTS, map_at_k, weighted_topk
from lookalike.ranking.labels import encode_labels
from lookalike.ranking.labels import relevance as label_relevance
from lookalike.registry import Registry
from lookalike.search.rejection import apply_threshold, goodness

QueryLabels = Sequence[Hashable | None]
GalleryLabels = Sequence[Hashable | None]
ExcludeRows = np.ndarray | Sequence[int] | None


@dataclass(frozen=True)
class Relevance:
    """Who is right where in a result, computed once and reused for every threshold.

    Attributes:
        relevant: ``(Q, depth)`` bool, the neighbour at each rank is of the query's class
            (always False for distractors and padding).
        genuine: ``(Q,)`` bool, the query's class is in the gallery.
        num_relevant: ``(Q,)`` int64 gallery items of the query's class (its excluded row left
            out); 1 for a distractor (its one right answer is "no match").
    """

    relevant: np.ndarray
    genuine: np.ndarray
    num_relevant: np.ndarray


def relevance(
    result: SearchResult,
    query_labels: QueryLabels,
    gallery_labels: GalleryLabels,
    depth: int,
    exclude_rows: ExcludeRows = None,
) -> Relevance:
    """The :class:`Relevance` of the first ``depth`` ranks of ``result``.

    Labels are encoded and matched by the library's one rule (:mod:`lookalike.ranking.labels`):
    an unlabelled gallery item is a distractor image, never a right answer.

    Args:
        result: ``(Q, K)`` search result, best first.
        query_labels: ``Q`` labels, None for known distractors.
        gallery_labels: ``N`` labels, None for distractor images.
        depth: Ranks looked at, at most ``K + 1`` (the last may hold "no match").
        exclude_rows: ``(Q,)`` gallery row left out of each query's list (its own image when the
            queries are gallery images), -1 where none. That row is not a right answer: it does
            not count among the query's relevant items, and a query whose class has no other
            gallery item is a distractor.

    Raises:
        ValueError: Labels or ``exclude_rows`` that do not fit ``result``, or a list that holds
            its query's excluded row.
    """
    if depth > result.k + 1:
        raise ValueError(f"need {depth - 1} neighbours per query, the result holds {result.k}")
    codes = encode_labels(query_labels, gallery_labels)
    if len(codes.query) != len(result):
        raise ValueError(f"{len(codes.query)} query labels for {len(result)} queries")
    if result.indices.size and result.indices.max() >= len(codes.gallery):
        raise ValueError(
            f"the result refers to gallery row {result.indices.max()} but only "
            f"{len(codes.gallery)} gallery labels are given"
        )
    relevant = label_relevance(result.indices[:, :depth], codes)
    relevant = np.pad(relevant, ((0, 0), (0, depth - relevant.shape[1])))
    own_rows = _own_relevant_rows(result, codes.query, codes.gallery, exclude_rows)
    class_sizes = codes.num_relevant() - own_rows
    genuine = class_sizes > 0
    return Relevance(relevant & genuine[:, None], genuine, np.where(genuine, class_sizes, 1))


def _own_relevant_rows(
    result: SearchResult, query_codes: np.ndarray, gallery_codes: np.ndarray, exclude_rows: ExcludeRows
) -> np.ndarray:
    """``(Q,)`` int64 1 where the query's excluded gallery row is of its own class, else 0."""
    if exclude_rows is None:
        return np.zeros(len(query_codes), dtype=np.int64)
    rows = np.asarray(exclude_rows)
    if rows.shape != (len(result),) or (rows.size and not np.issubdtype(rows.dtype, np.integer)):
        raise ValueError(
            f"exclude_rows must hold one integer gallery row per query ({len(result)},), "
            f"got shape {rows.shape} of {rows.dtype}"
        )
    rows = rows.astype(np.int64)
    if rows.size and (rows.min() < -1 or rows.max() >= len(gallery_codes)):
        raise ValueError(f"exclude_rows must lie in [-1, {len(gallery_codes)}) (-1: none)")
    listed = (result.indices == rows[:, None]) & (rows[:, None] >= 0)
    if listed.any():
        query = int(np.flatnonzero(listed.any(axis=1))[0])
        raise ValueError(
            f"query {query}'s list holds its excluded gallery row {int(rows[query])}; "
            "search with the query's own image excluded"
        )
    own = (rows >= 0) & (gallery_codes[np.maximum(rows, 0)] == query_codes) & (query_codes >= 0)
    return own.astype(np.int64)


def matches_with_no_match(relevance: Relevance, positions: np.ndarray, k: int) -> np.ndarray:
    """``(Q, k)`` relevance of the lists with "no match" inserted at ``positions`` ``(Q,)``
    (relevant for distractors)."""
    relevant, genuine = relevance.relevant, relevance.genuine
    columns = np.arange(k)
    shifted = relevant[:, np.maximum(columns - 1, 0)]
    return np.where(
        columns < positions[:, None],
        relevant[:, :k],
        np.where(columns == positions[:, None], ~genuine[:, None], shifted),
    )


class OpenSetObjective(ABC):
    """A score of ranked lists with "no match" inserted; higher is better."""

    @property
    @abstractmethod
    def depth(self) -> int:
        """Ranks the objective looks at."""

    @abstractmethod
    def score(self, relevance: Relevance, positions: np.ndarray) -> float:
        """The objective when "no match" sits at ``positions``.

        Args:
            relevance: :func:`relevance` of the result to at least :attr:`depth` ranks.
            positions: ``(Q,)`` int64 0-based rank of "no match" in each list.
        """

    def evaluate(
        self,
        result: SearchResult,
        query_labels: QueryLabels,
        gallery_labels: GalleryLabels,
        threshold: float,
        exclude_rows: ExcludeRows = None,
    ) -> float:
        """The objective of ``result``'s lists with "no match" inserted at ``threshold`` (in the
        scores' own sense); ``exclude_rows`` as in :func:`relevance`."""
        table = relevance(result, query_labels, gallery_labels, self.depth, exclude_rows)
        return self.score(table, apply_threshold(result, threshold))


class MapAtK(OpenSetObjective):
    """Kaggle's MAP@K (:func:`~lookalike.metrics.map_at_k`) with "no match" as an answer.

    Args:
        k: The cut-off K.
    """

    def __init__(self, k: int = 5) -> None:
        if k < 1:
            raise ValueError(f"MAP@K needs a cut-off K >= 1, got {k}")
        self.k = k

    @property
    def depth(self) -> int:
        return self.k

    def score(self, relevance: Relevance, positions: np.ndarray) -> float:
        matches = matches_with_no_match(relevance, positions, self.k)
        return float(map_at_k(matches, relevance.num_relevant, self.k))


class WeightedTopK(OpenSetObjective):
    """``sum_k weight_k * Acc@k`` (:func:`~lookalike.metrics.weighted_topk`) with "no match" as
    an answer.

    Args:
        weights: ``{k: weight}``; :data:`~lookalike.metrics.ranking.DEFAULT_TOPK_WEIGHTS` when
            None.
    """

    def __init__(self, weights: Mapping[int, float] | None = None) -> None:
        self.weights = DEFAULT_TOPK_WEIGHTS if weights is None else weights

    @property
    def depth(self) -> int:
        return max(self.weights, default=1)

    def score(self, relevance: Relevance, positions: np.ndarray) -> float:
        matches = matches_with_no_match(relevance, positions, self.depth)
        return float(weighted_topk(matches, self.weights))


class AcceptRejectF1(OpenSetObjective):
    """F1 of accepting genuine queries: positive = the query's class is in the gallery, predicted
    positive = its top-1 is accepted. 0 when there is neither a genuine nor an accepted query."""

    @property
    def depth(self) -> int:
        return 1

    def score(self, relevance: Relevance, positions: np.ndarray) -> float:
        genuine, accepts = relevance.genuine, positions > 0
        true_positive = int((genuine & accepts).sum())
        wrong = int((accepts & ~genuine).sum() + (genuine & ~accepts).sum())
        denominator = 2 * true_positive + wrong
        return 2.0 * true_positive / denominator if denominator else 0.0


# Each entry is called with the K of "name@K" (None without one) and the cut-off weights.
OBJECTIVES = Registry[OpenSetObjective]("open-set objective")


@OBJECTIVES.register("map@k")
def _map_at_k(cut_off: int | None, weights: Mapping[int, float] | None) -> OpenSetObjective:
    if cut_off is None:
        raise ValueError("the map objective needs a cut-off: map@K, e.g. map@5")
    return MapAtK(cut_off)


@OBJECTIVES.register("weighted_topk")
def _weighted_topk(cut_off: int | None, weights: Mapping[int, float] | None) -> OpenSetObjective:
    return WeightedTopK(weights)


@OBJECTIVES.register("f1")
def _f1(cut_off: int | None, weights: Mapping[int, float] | None) -> OpenSetObjective:
    return AcceptRejectF1()


def create_objective(name: str, weights: Mapping[int, float] | None = None) -> OpenSetObjective:
    """The objective called ``name``: "map@K" (e.g. "map@5"), "weighted_topk" or "f1".

    Args:
        name: A name of :data:`OBJECTIVES`, with its cut-off K written as ``"@K"`` where it has
            one.
        weights: Cut-off weights of "weighted_topk"; :data:`DEFAULT_TOPK_WEIGHTS` when None.

    Raises:
        ValueError: An unknown name (the message lists the valid ones).
    """
    family, at, cut_off = name.partition("@")
    numbered = bool(at) and cut_off.isdigit()
    factory = OBJECTIVES.get(f"{family}@k" if numbered else name)
    return factory(int(cut_off) if numbered else None, weights)


def objective_depth(objective: str, weights: Mapping[int, float]) -> int:
    """How many ranks ``objective`` looks at: K of "map@K", the largest weighted cut-off, 1 for F1."""
    return create_objective(objective, weights).depth


def map_at_k_with_rejection(
    result: SearchResult,
    query_labels: QueryLabels,
    gallery_labels: GalleryLabels,
    threshold: float,
    k: int = 5,
    exclude_rows: ExcludeRows = None,
) -> float:
    """Kaggle's MAP@K over lists with "no match" inserted (:class:`MapAtK`)."""
    return MapAtK(k).evaluate(result, query_labels, gallery_labels, threshold, exclude_rows)


def weighted_topk_with_rejection(
    result: SearchResult,
    query_labels: QueryLabels,
    gallery_labels: GalleryLabels,
    threshold: float,
    weights: Mapping[int, float] | None = None,
    exclude_rows: ExcludeRows = None,
) -> float:
    """``sum_k weight_k * Acc@k`` over lists with "no match" inserted (:class:`WeightedTopK`)."""
    return WeightedTopK(weights).evaluate(result, query_labels, gallery_labels, threshold, exclude_rows)


def accept_reject_f1(
    result: SearchResult,
    query_labels: QueryLabels,
    gallery_labels: GalleryLabels,
    threshold: float,
    exclude_rows: ExcludeRows = None,
) -> float:
    """F1 of accepting genuine queries at ``threshold`` (:class:`AcceptRejectF1`)."""
    return AcceptRejectF1().evaluate(result, query_labels, gallery_labels, threshold, exclude_rows)


class OperatingPoint(NamedTuple):
    """A threshold chosen for a target false match rate, and the rates it gives."""

    target_fmr: float
    threshold: float
    fmr: float
    fnmr: float


def _top1_split(
    result: SearchResult,
    query_labels: QueryLabels,
    gallery_labels: GalleryLabels,
    exclude_rows: ExcludeRows = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-1 goodness of the genuine queries and of the distractors."""
    genuine = relevance(result, query_labels, gallery_labels, 1, exclude_rows).genuine
    if genuine.all() or not genuine.any():
        raise ValueError("open-set rates need both genuine and distractor queries")
    top1 = goodness(result)[:, 0] if result.k else np.full(len(result), -np.inf)
    return top1[genuine], top1[~genuine]


def open_set_roc(
    result: SearchResult,
    query_labels: QueryLabels,
    gallery_labels: GalleryLabels,
    exclude_rows: ExcludeRows = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC of accepting a query on its top-1 score (``exclude_rows`` as in :func:`relevance`).

    Returns:
        FMR, TMR (``1 - FNMR``) and thresholds (scores' sense), from strictest (reject all, the
        threshold just past the best score) to most lenient; ``sklearn.metrics.roc_curve`` with
        ``drop_intermediate=False`` and genuine queries as positives.
    """
    genuine, distractor = _top1_split(result, query_labels, gallery_labels, exclude_rows)
    levels = np.unique(np.concatenate([genuine, distractor]))[::-1]
    levels = levels[np.isfinite(levels)]
    levels = np.concatenate([[np.inf], levels])
    genuine, distractor = np.sort(genuine), np.sort(distractor)
    tmr = (genuine.size - np.searchsorted(genuine, levels, side="left")) / genuine.size
    fmr = (distractor.size - np.searchsorted(distractor, levels, side="left")) / distractor.size
    return fmr, tmr, levels if result.higher_is_better else -levels


def fnmr_at_fmr(
    result: SearchResult,
    query_labels: QueryLabels,
    gallery_labels: GalleryLabels,
    target_fmrs: Sequence[float] = (1e-2, 1e-3),
    exclude_rows: ExcludeRows = None,
) -> list[OperatingPoint]:
    """FNMR at the most lenient threshold whose FMR does not exceed each target
    (``exclude_rows`` as in :func:`relevance`).

    Returns:
        One :class:`OperatingPoint` per target; with fewer than ``1 / target`` distractors the
        target can only be met by accepting none of them.
    """
    genuine, distractor = _top1_split(result, query_labels, gallery_labels, exclude_rows)
    ranked = np.sort(distractor)[::-1]
    finite = np.concatenate([genuine, distractor])
    finite = finite[np.isfinite(finite)]
    points = []
    for target in target_fmrs:
        if not 0.0 <= target <= 1.0:
            raise ValueError(f"target FMR must lie in [0, 1], got {target}")
        allowed = int(np.floor(target * ranked.size + 1e-9))
        if allowed >= ranked.size:
            level = float(finite.min()) if finite.size else -np.inf
        else:
            level = float(np.nextafter(np.float32(ranked[allowed]), np.float32(np.inf)))
        threshold = level if result.higher_is_better else -level
        fmr = float((distractor >= level).mean())
        fnmr = float((genuine < level).mean())
        points.append(OperatingPoint(float(target), threshold, fmr, fnmr))
    return points
