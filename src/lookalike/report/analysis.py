"""Error analysis of a retrieval run: per-class recall, confusions, predicted classes, similarities.

The ranking is the run's own (``ranking.npz``, exact, with the query's own image removed when
the gallery contains the queries): nothing here ranks again, so every number agrees with
``metrics.json``. Similarity histograms use every (query, gallery) pair when there are few,
else a seeded sample of pairs scored in chunks; no ``(Q, N)`` matrix is ever built.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from lookalike.embed.store import EmbeddingSet
from lookalike.index.metrics import Metric, get_metric
from lookalike.metrics.retrieval import PerQueryMetrics, retrieval_metrics
from lookalike.ranking import UNLABELLED, Ranking, encode_labels
from lookalike.search.topk import self_exclusion

logger = logging.getLogger(__name__)

PAIR_CHUNK = 512


@dataclass
class RankingAnalysis:
    """The exact ranking of the labelled queries and their per-query metrics.

    Attributes:
        query_rows: ``(M,)`` rows of the query set that were ranked (those with a label).
        summary: The summary metrics of :func:`~lookalike.metrics.retrieval_metrics`.
        per_query: Per-query values, first-positive ranks and top neighbours of those ``M`` rows.
        top1_labels: ``M`` labels of each query's best gallery item (:data:`UNLABELLED` for a
            gallery item without a label, ``None`` where the gallery is empty).
    """

    query_rows: np.ndarray
    summary: dict[str, float]
    per_query: PerQueryMetrics
    top1_labels: list[str | None]


@dataclass
class ClassRecall:
    """Recall@1 of one query class: ``hits`` of its ``count`` evaluated queries."""

    label: str
    count: int
    hits: int

    @property
    def recall(self) -> float:
        return self.hits / self.count


@dataclass
class SimilaritySamples:
    """Scores of positive (same label) and negative (query, gallery) pairs.

    Attributes:
        positive: ``(P,)`` float32 scores in the metric's own sense.
        negative: ``(M,)`` float32 scores.
        positive_pairs: ``(P, 2)`` int64 (query row, gallery row) of each positive score.
        negative_pairs: ``(M, 2)`` int64 (query row, gallery row) of each negative score.
        exhaustive: True when every pair was scored, False when pairs were sampled.
    """

    positive: np.ndarray
    negative: np.ndarray
    positive_pairs: np.ndarray
    negative_pairs: np.ndarray
    exhaustive: bool


def analyse_ranking(ranking: Ranking, k: int = 10) -> RankingAnalysis | None:
    """Per-query metrics and top-1 answers of the labelled queries of a run's saved ranking.

    Args:
        ranking: The run's ranking (``ranking.npz``); nothing is ranked here.
        k: Results per query the report shows (recall is also reported at this cut-off).

    Returns:
        The analysis, or None when no query or no gallery item has a label.
    """
    codes = ranking.codes
    rows = np.flatnonzero(codes.labelled_queries).astype(np.int64)
    if len(rows) == 0 or ranking.num_gallery == 0 or (codes.gallery < 0).all():
        logger.info("no labelled queries or gallery items: skipping the ranking analysis")
        return None
    scored = retrieval_metrics(ranking, ks=sorted({1, 5, 10, int(k)}))
    top1 = ranking.select(rows).neighbours.indices[:, 0]
    top1_labels: list[str | None] = [
        None if row < 0 else (UNLABELLED if label is None else str(label))
        for row, label in zip(top1.tolist(), ranking.labels_of(top1))
    ]
    return RankingAnalysis(rows, scored.summary, scored.per_query, top1_labels)


def per_class_recall(
    query_labels: Sequence[str], hits: np.ndarray, evaluated: np.ndarray | None = None
) -> list[ClassRecall]:
    """Recall@1 per query class, worst first (ties by label).

    Args:
        query_labels: ``M`` query labels.
        hits: ``(M,)`` 1 where the query's top-1 is relevant (``values["recall@1"]``).
        evaluated: ``(M,)`` bool of the queries to count; all when None.
    """
    hits = np.asarray(hits)
    mask = np.ones(len(hits), bool) if evaluated is None else np.asarray(evaluated, bool)
    if len(query_labels) != len(hits) or len(mask) != len(hits):
        raise ValueError(
            f"{len(query_labels)} labels, {len(hits)} hits and {len(mask)} evaluated flags "
            "must be equal in number"
        )
    counts: Counter[str] = Counter()
    correct: Counter[str] = Counter()
    for label, hit, keep in zip(query_labels, hits.tolist(), mask.tolist()):
        if keep:
            counts[label] += 1
            correct[label] += int(hit > 0)
    classes = [ClassRecall(label, counts[label], correct[label]) for label in counts]
    return sorted(classes, key=lambda c: (c.recall, c.label))


def confused_pairs(
    query_labels: Sequence[str], top1_labels: Sequence[str | None], limit: int = 20
) -> list[tuple[str, str, int]]:
    """The most frequent (query class, wrong top-1 class, count), most frequent first."""
    if len(query_labels) != len(top1_labels):
        raise ValueError(f"{len(query_labels)} query labels but {len(top1_labels)} top-1 labels")
    counts = Counter(
        (truth, predicted)
        for truth, predicted in zip(query_labels, top1_labels)
        if predicted is not None and predicted != truth
    )
    ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return [(truth, predicted, count) for (truth, predicted), count in ordered[:limit]]


def predicted_class_counts(top1_labels: Sequence[str | None]) -> list[tuple[str, int]]:
    """How often each class is the top-1 answer, most frequent first (ties by label)."""
    counts = Counter(label for label in top1_labels if label is not None)
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))


def paired_scores(
    metric: Metric | str, queries: np.ndarray, gallery: np.ndarray, pairs: np.ndarray
) -> np.ndarray:
    """``(P,)`` float32 score of each (query row, gallery row) pair, ``PAIR_CHUNK`` at a time.

    Each chunk scores a ``(chunk, chunk)`` block with the metric's own ``pairwise`` and keeps its
    diagonal, so scores agree exactly with the search code's.
    """
    metric = get_metric(metric) if isinstance(metric, str) else metric
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    out = np.empty(len(pairs), dtype=np.float32)
    for start in range(0, len(pairs), PAIR_CHUNK):
        block = pairs[start : start + PAIR_CHUNK]
        left = torch.from_numpy(metric.prepare(queries[block[:, 0]]))
        right = torch.from_numpy(metric.prepare(gallery[block[:, 1]]))
        out[start : start + len(block)] = torch.diagonal(metric.pairwise(left, right)).numpy()
    return out


def similarity_samples(
    query: EmbeddingSet,
    gallery: EmbeddingSet,
    metric: str = "cosine",
    exclude_self: bool = False,
    max_pairs: int = 100_000,
    seed: int = 0,
) -> SimilaritySamples:
    """Scores of positive and negative (query, gallery) pairs for the similarity histograms.

    With ``Q * N <= max_pairs`` every pair is scored (except a query with its own image when
    ``exclude_self``). Otherwise ``max_pairs / 2`` positive pairs (a random query, then a random
    gallery item of its class) and as many negative pairs (uniform over pairs of different
    labels) are drawn with ``seed``. Unlabelled items only form negative pairs.

    Args:
        query: Query embeddings ``(Q, D)``.
        gallery: Gallery embeddings ``(N, D)``.
        metric: "cosine", "ip", "l2" or "l1".
        exclude_self: Leave out the pair of a query with the gallery item of the same id.
        max_pairs: Pairs scored at most.
        seed: Seed of the sample.
    """
    if max_pairs < 2:
        raise ValueError(f"max_pairs must be at least 2, got {max_pairs}")
    codes = encode_labels(query.labels, gallery.labels)
    query_codes, gallery_codes = codes.query, codes.gallery
    own = self_exclusion(query.ids, gallery.ids) if exclude_self else np.full(len(query), -1)
    num_queries, num_gallery = len(query), len(gallery)
    if num_queries * num_gallery <= max_pairs:
        q, g = np.divmod(np.arange(num_queries * num_gallery, dtype=np.int64), num_gallery)
        keep = g != own[q]
        q, g = q[keep], g[keep]
        positive = query_codes[q] == gallery_codes[g]
        pos_pairs = np.stack([q[positive], g[positive]], axis=1)
        neg_pairs = np.stack([q[~positive], g[~positive]], axis=1)
        exhaustive = True
    else:
        rng = np.random.default_rng(seed)
        pos_pairs = _sample_positives(query_codes, gallery_codes, own, max_pairs // 2, rng)
        neg_pairs = _sample_negatives(query_codes, gallery_codes, own, max_pairs // 2, rng)
        exhaustive = False
    return SimilaritySamples(
        paired_scores(metric, query.embeddings, gallery.embeddings, pos_pairs),
        paired_scores(metric, query.embeddings, gallery.embeddings, neg_pairs),
        pos_pairs.reshape(-1, 2),
        neg_pairs.reshape(-1, 2),
        exhaustive,
    )


def _sample_positives(
    query_codes: np.ndarray,
    gallery_codes: np.ndarray,
    own: np.ndarray,
    count: int,
    rng: np.random.Generator,
) -> np.ndarray:
    order = np.argsort(gallery_codes, kind="stable")
    sorted_codes = gallery_codes[order]
    starts = np.searchsorted(sorted_codes, query_codes, side="left")
    sizes = np.searchsorted(sorted_codes, query_codes, side="right") - starts
    # A query needs a same-class gallery item other than its own image.
    own_in_class = (own >= 0) & (gallery_codes[np.maximum(own, 0)] == query_codes)
    candidates = np.flatnonzero((query_codes >= 0) & (sizes - own_in_class > 0))
    if len(candidates) == 0:
        return np.zeros((0, 2), dtype=np.int64)
    pairs: list[np.ndarray] = []
    total = 0
    for _ in range(20):
        q = rng.choice(candidates, size=count)
        g = order[starts[q] + rng.integers(0, sizes[q])]
        keep = g != own[q]
        pairs.append(np.stack([q[keep], g[keep]], axis=1))
        total += int(keep.sum())
        if total >= count:
            break
    return np.concatenate(pairs)[:count]


def _sample_negatives(
    query_codes: np.ndarray,
    gallery_codes: np.ndarray,
    own: np.ndarray,
    count: int,
    rng: np.random.Generator,
) -> np.ndarray:
    pairs: list[np.ndarray] = []
    total = 0
    for _ in range(20):
        q = rng.integers(0, len(query_codes), size=count)
        g = rng.integers(0, len(gallery_codes), size=count)
        keep = (query_codes[q] != gallery_codes[g]) & (g != own[q])
        pairs.append(np.stack([q[keep], g[keep]], axis=1))
        total += int(keep.sum())
        if total >= count:
            break
    return np.concatenate(pairs)[:count]


def select_queries(
    average_precision: np.ndarray, first_positive_rank: np.ndarray, count: int = 5
) -> dict[str, np.ndarray]:
    """Positions of the best and worst queries by average precision.

    Best: highest AP, then earliest first correct rank (0, "none", counts as last), then lowest
    position; worst: the same order reversed.

    Args:
        average_precision: ``(M,)`` per-query AP.
        first_positive_rank: ``(M,)`` 1-based rank of the first correct item, 0 if none.
        count: Queries per group.

    Returns:
        ``{"best": ..., "worst": ...}`` int64 positions into the inputs, best (worst) first.
    """
    ap = np.asarray(average_precision, dtype=np.float64)
    first = np.asarray(first_positive_rank, dtype=np.int64)
    if ap.shape != first.shape or ap.ndim != 1:
        raise ValueError(
            f"average_precision {ap.shape} and first_positive_rank {first.shape} differ"
        )
    first_key = np.where(first > 0, first, np.iinfo(np.int64).max)
    ranked = np.lexsort((np.arange(len(ap)), first_key, -ap))
    return {"best": ranked[:count], "worst": ranked[::-1][:count]}


def random_rows(total: int, count: int = 5, seed: int = 0, avoid: Sequence[int] = ()) -> np.ndarray:
    """``count`` sorted rows of ``range(total)``, seeded, outside ``avoid`` where possible."""
    rest = np.setdiff1d(np.arange(total), np.asarray(avoid, dtype=np.int64))
    pool = rest if len(rest) >= count else np.arange(total)
    chosen = np.random.default_rng(seed).choice(pool, size=min(count, len(pool)), replace=False)
    return np.sort(chosen).astype(np.int64)
