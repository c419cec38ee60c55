"""Open-set retrieval: reject queries whose best match is too weak, tune and score the threshold.

Some queries show an identity absent from the gallery ("distractors", Kaggle's ``new_whale``). A
rejection threshold on the scores inserts a "no match" answer, :data:`NO_MATCH`, into each ranked
list at the first position whose score is worse than the threshold; a query is *accepted* when its
top-1 score is not worse than it. Scores keep their metric's sense
(``SearchResult.higher_is_better``): internally they become a "goodness" (the similarity, or the
negated distance) so every rule reads "accept when goodness >= threshold".

Definitions used throughout: a query is *genuine* when its label occurs in the gallery, else a
distractor (label None or unseen). FMR (false match rate) is the fraction of distractors accepted;
FNMR (false non-match rate) the fraction of genuine queries rejected, i.e. whose top-1 is rejected,
whether or not that top-1 is correct (ISO/IEC 19795-1 verification-style rates over top-1 scores).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import NamedTuple

import numpy as np

from lookalike.metrics.ranking import DEFAULT_TOPK_WEIGHTS, map_at_k, weighted_topk
from lookalike.search.result import SearchResult

NO_MATCH = -2
QueryLabels = Sequence[Hashable | None]
GalleryLabels = Sequence[Hashable]
OBJECTIVES = ("map@K (e.g. map@5)", "weighted_topk", "f1")


class OperatingPoint(NamedTuple):
    """A threshold chosen for a target false match rate, and the rates it gives."""

    target_fmr: float
    threshold: float
    fmr: float
    fnmr: float


def _goodness(result: SearchResult) -> np.ndarray:
    """``(Q, k)`` float64 scores turned higher-is-better; -inf for padding and NaN."""
    scores = result.scores.astype(np.float64)
    goodness = scores if result.higher_is_better else -scores
    return np.where((result.indices >= 0) & ~np.isnan(goodness), goodness, -np.inf)


def _to_goodness(threshold: float, higher_is_better: bool) -> float:
    # Scores are float32: a threshold typed as 0.7 must accept a score stored as float32(0.7).
    level = float(np.float32(threshold))
    return level if higher_is_better else -level


def _positions(goodness: np.ndarray, threshold: float) -> np.ndarray:
    if goodness.shape[1] == 0:  # nothing ranked: "no match" comes first
        return np.zeros(goodness.shape[0], dtype=np.int64)
    fails = ~(goodness >= threshold)
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
    """
    return _positions(_goodness(result), _to_goodness(threshold, result.higher_is_better))


def accepted(result: SearchResult, threshold: float) -> np.ndarray:
    """``(Q,)`` bool: the top-1 neighbour exists and its score is not worse than ``threshold``."""
    return apply_threshold(result, threshold) > 0


def ranked_with_no_match(result: SearchResult, threshold: float, k: int) -> list[list[int]]:
    """Each query's gallery rows with :data:`NO_MATCH` inserted (Kaggle ``new_whale`` style).

    Args:
        result: ``(Q, K)`` search result.
        threshold: In the scores' own sense.
        k: Length of each returned list (padding rows are dropped).

    Returns:
        ``Q`` lists of at most ``k`` ints, gallery rows and :data:`NO_MATCH`.
    """
    if k < 1:
        raise ValueError(f"k must be a positive integer, got {k}")
    positions = apply_threshold(result, threshold)
    ranked = []
    for row, position in zip(result.indices.tolist(), positions.tolist()):
        # Padding fails every threshold, so it only ever follows NO_MATCH.
        after = [index for index in row[position:] if index >= 0]
        ranked.append((row[:position] + [NO_MATCH] + after)[:k])
    return ranked


def _label_codes(
    result: SearchResult, query_labels: QueryLabels, gallery_labels: GalleryLabels
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gallery codes ``(N,)``, query codes ``(Q,)`` (-1 for distractors) and class sizes."""
    query_labels, gallery_labels = list(query_labels), list(gallery_labels)
    if len(query_labels) != len(result):
        raise ValueError(f"{len(query_labels)} query labels for {len(result)} queries")
    if result.indices.size and result.indices.max() >= len(gallery_labels):
        raise ValueError(
            f"the result refers to gallery row {result.indices.max()} but only "
            f"{len(gallery_labels)} gallery labels are given"
        )
    codes: dict[Hashable, int] = {}
    gallery_codes = np.empty(len(gallery_labels), dtype=np.int64)
    for row, label in enumerate(gallery_labels):
        if label is None:
            raise ValueError(f"gallery_labels[{row}] is None; every gallery item needs a label")
        gallery_codes[row] = codes.setdefault(label, len(codes))
    query_codes = np.array(
        [-1 if label is None else codes.get(label, -1) for label in query_labels], dtype=np.int64
    )
    return gallery_codes, query_codes, np.bincount(gallery_codes, minlength=len(codes))


def _relevance(
    result: SearchResult,
    query_labels: QueryLabels,
    gallery_labels: GalleryLabels,
    depth: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(Q, depth)`` relevance of the real neighbours, ``(Q,)`` genuine flags, num_relevant."""
    if depth > result.k + 1:
        raise ValueError(f"need {depth - 1} neighbours per query, the result holds {result.k}")
    gallery_codes, query_codes, class_sizes = _label_codes(result, query_labels, gallery_labels)
    indices = result.indices[:, :depth]
    relevant = (indices >= 0) & (gallery_codes[np.maximum(indices, 0)] == query_codes[:, None])
    relevant = np.pad(relevant, ((0, 0), (0, depth - relevant.shape[1])))
    genuine = query_codes >= 0
    num_relevant = np.where(genuine, class_sizes[np.maximum(query_codes, 0)], 1)
    return relevant & genuine[:, None], genuine, num_relevant


def _matches_with_no_match(
    relevant: np.ndarray, genuine: np.ndarray, positions: np.ndarray, k: int
) -> np.ndarray:
    """``(Q, k)`` relevance of the lists with "no match" inserted (relevant for distractors)."""
    columns = np.arange(k)
    shifted = relevant[:, np.maximum(columns - 1, 0)]
    return np.where(
        columns < positions[:, None],
        relevant[:, :k],
        np.where(columns == positions[:, None], ~genuine[:, None], shifted),
    )


def map_at_k_with_rejection(
    result: SearchResult,
    query_labels: QueryLabels,
    gallery_labels: GalleryLabels,
    threshold: float,
    k: int = 5,
) -> float:
    """Kaggle's MAP@K over lists with "no match" inserted (:func:`~lookalike.metrics.map_at_k`).

    For a distractor "no match" is the one relevant answer; for a genuine query it is wrong and the
    gallery items of its class are relevant.
    """
    relevant, genuine, num_relevant = _relevance(result, query_labels, gallery_labels, k)
    positions = apply_threshold(result, threshold)
    return map_at_k(_matches_with_no_match(relevant, genuine, positions, k), num_relevant, k)


def weighted_topk_with_rejection(
    result: SearchResult,
    query_labels: QueryLabels,
    gallery_labels: GalleryLabels,
    threshold: float,
    weights: Mapping[int, float] | None = None,
) -> float:
    """``sum_k weight_k * Acc@k`` over lists with "no match" inserted (relevant for distractors)."""
    weights = DEFAULT_TOPK_WEIGHTS if weights is None else weights
    depth = max(weights, default=1)
    relevant, genuine, _ = _relevance(result, query_labels, gallery_labels, depth)
    positions = apply_threshold(result, threshold)
    return weighted_topk(_matches_with_no_match(relevant, genuine, positions, depth), weights)


def accept_reject_f1(
    result: SearchResult,
    query_labels: QueryLabels,
    gallery_labels: GalleryLabels,
    threshold: float,
) -> float:
    """F1 of accepting genuine queries: positive = the query's class is in the gallery, predicted
    positive = :func:`accepted`. 0 when there is neither a genuine nor an accepted query."""
    _, genuine, _ = _relevance(result, query_labels, gallery_labels, 1)
    return _f1(genuine, accepted(result, threshold))


def _f1(genuine: np.ndarray, accepts: np.ndarray) -> float:
    true_positive = int((genuine & accepts).sum())
    denominator = 2 * true_positive + int((accepts & ~genuine).sum() + (genuine & ~accepts).sum())
    return 2.0 * true_positive / denominator if denominator else 0.0


def objective_depth(objective: str, weights: Mapping[int, float]) -> int:
    """How many ranks ``objective`` looks at: K of "map@K", the largest weighted cut-off, 1 for F1."""
    if objective == "f1":
        return 1
    if objective == "weighted_topk":
        return max(weights, default=1)
    cut_off = objective[4:] if objective.startswith("map@") else ""
    if not cut_off.isdigit() or int(cut_off) < 1:
        raise ValueError(f"unknown objective {objective!r}; valid names: {', '.join(OBJECTIVES)}")
    return int(cut_off)


def _default_candidates(goodness: np.ndarray, max_candidates: int) -> np.ndarray:
    """Goodness thresholds giving every distinct acceptance pattern (or ``max_candidates`` of them):
    midpoints between consecutive observed values, the lowest value and one above the highest,
    all float32 so that they survive a round trip through a float32 score file."""
    values = np.unique(goodness[np.isfinite(goodness)]).astype(np.float32)
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
) -> tuple[float, np.ndarray]:
    """The rejection threshold maximising an open-set objective on labelled queries.

    Args:
        result: ``(Q, K)`` search result of validation queries (distractors included).
        query_labels: ``Q`` labels, None for known distractors.
        gallery_labels: ``N`` labels.
        objective: "map@K" (:func:`map_at_k_with_rejection`), "weighted_topk"
            (:func:`weighted_topk_with_rejection`) or "f1" (:func:`accept_reject_f1`).
        candidates: Thresholds to try, in the scores' sense; by default midpoints between the
            distinct scores the objective looks at (capped to ``max_candidates`` quantiles), the
            lowest score (accept all) and one past the best (reject all).
        max_candidates: Cap on the default candidates.
        weights: Cut-off weights of "weighted_topk"; :data:`DEFAULT_TOPK_WEIGHTS` when None.

    Returns:
        The best threshold (the most lenient among ties) and a ``(T, 2)`` float64 table of
        ``(threshold, objective value)`` rows sorted by threshold.
    """
    weights = DEFAULT_TOPK_WEIGHTS if weights is None else weights
    depth = objective_depth(objective, weights)
    relevant, genuine, num_relevant = _relevance(result, query_labels, gallery_labels, depth)
    goodness = _goodness(result)
    hib = result.higher_is_better
    if candidates is None:
        levels = _default_candidates(goodness[:, :depth], max_candidates)
    else:
        levels = np.unique([_to_goodness(value, hib) for value in np.asarray(candidates).ravel()])
        if levels.size == 0:
            raise ValueError("candidates is empty; pass at least one threshold or None")
    values = np.empty(levels.size)
    for row, level in enumerate(levels):
        positions = _positions(goodness, level)
        if objective == "f1":
            values[row] = _f1(genuine, positions > 0)
            continue
        matches = _matches_with_no_match(relevant, genuine, positions, depth)
        if objective == "weighted_topk":
            values[row] = weighted_topk(matches, weights)
        else:
            values[row] = map_at_k(matches, num_relevant, depth)
    best = int(np.argmax(values))
    thresholds = levels if hib else -levels
    table = np.stack([thresholds, values], axis=1)
    return float(thresholds[best]), table[np.argsort(thresholds, kind="stable")]


def nearest_positive_scores(
    result: SearchResult, query_labels: QueryLabels, gallery_labels: GalleryLabels
) -> np.ndarray:
    """``(Q,)`` float64 score of each query's first relevant neighbour; NaN where none is listed."""
    relevant, _, _ = _relevance(result, query_labels, gallery_labels, result.k)
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
    if higher_is_better:
        return float(np.percentile(scores, 100.0 - q, method="lower"))
    return float(np.percentile(scores, q, method="higher"))


def holdout_distractors(
    query_labels: QueryLabels,
    gallery_labels: GalleryLabels,
    fraction: float,
    seed: int = 0,
) -> tuple[np.ndarray, list[Hashable]]:
    """Make distractors by removing whole classes from the gallery.

    Args:
        query_labels: ``Q`` labels; the classes held out are drawn from those also in the gallery.
        gallery_labels: ``N`` labels.
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
    classes = list(dict.fromkeys(label for label in query_labels if label in in_gallery))
    count = int(round(fraction * len(classes)))
    chosen = np.random.default_rng(seed).choice(len(classes), size=count, replace=False)
    held_out = [classes[index] for index in sorted(chosen.tolist())]
    held = set(held_out)
    return np.array([label not in held for label in gallery_labels], dtype=bool), held_out


def _top1_split(
    result: SearchResult, query_labels: QueryLabels, gallery_labels: GalleryLabels
) -> tuple[np.ndarray, np.ndarray]:
    _, genuine, _ = _relevance(result, query_labels, gallery_labels, 1)
    if genuine.all() or not genuine.any():
        raise ValueError("open-set rates need both genuine and distractor queries")
    top1 = _goodness(result)[:, 0] if result.k else np.full(len(result), -np.inf)
    return top1[genuine], top1[~genuine]


def open_set_roc(
    result: SearchResult, query_labels: QueryLabels, gallery_labels: GalleryLabels
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC of accepting a query on its top-1 score.

    Returns:
        FMR, TMR (``1 - FNMR``) and thresholds (scores' sense), from strictest (reject all, the
        threshold just past the best score) to most lenient; ``sklearn.metrics.roc_curve`` with
        ``drop_intermediate=False`` and genuine queries as positives.
    """
    genuine, distractor = _top1_split(result, query_labels, gallery_labels)
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
) -> list[OperatingPoint]:
    """FNMR at the most lenient threshold whose FMR does not exceed each target.

    Returns:
        One :class:`OperatingPoint` per target; with fewer than ``1 / target`` distractors the
        target can only be met by accepting none of them.
    """
    genuine, distractor = _top1_split(result, query_labels, gallery_labels)
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
