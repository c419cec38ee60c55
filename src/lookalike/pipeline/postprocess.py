"""Post-processing of a ranking, switchable and compared side by side in ``evaluate``.

Each step is one of :mod:`lookalike.search`'s methods, applied in the order the literature does:

    PCA whitening (Radenović et al. 2018) ─► database-side augmentation (Arandjelović & Zisserman
    2012) ─► α-query expansion (Radenović et al. 2018) ─► k-reciprocal re-ranking (Zhong et al. 2017)

Every variant (the baseline, each enabled step alone, and all enabled steps together) is scored
on its own top-``depth`` ranking with the same function, so the rows of ``variants.csv`` compare
like with like. Neighbour lists come from the exact chunked search: no N×N matrix is built.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lookalike.embed.store import EmbeddingSet
from lookalike.index.result import SearchResult
from lookalike.metrics.ranking import (
    DEFAULT_TOPK_WEIGHTS,
    map_at_k,
    map_at_r,
    precision_at_k,
    recall_at_k,
    weighted_topk,
)
from lookalike.ranking import encode_labels, relevance
from lookalike.search.rerank import database_augmentation, k_reciprocal_rerank, query_expansion
from lookalike.search.topk import search_embeddings, self_exclusion
from lookalike.search.whitening import PCAWhitening

logger = logging.getLogger(__name__)

STEPS = ("whitening", "dba", "qe", "k_reciprocal")
_RERANK_METRICS = ("cosine", "l2", "l1")


@dataclass
class PostprocessSpec:
    """Which post-processing steps run, with their parameters.

    Attributes:
        whitening: Learn PCA whitening and apply it to queries and gallery.
        whitening_fit: Embedding folder it is learned on (a train set); the gallery when None.
        whitening_dim: Output width; the input width when None.
        whitening_shrinkage: Covariance shrinkage in ``[0, 1]`` (keeps small sets stable).
        dba: Database-side augmentation of the gallery.
        dba_n: Gallery neighbours averaged into each gallery vector.
        dba_alpha: Exponent on their similarities.
        qe: α-query expansion.
        qe_n: Neighbours averaged into each query.
        qe_alpha: Exponent on their similarities (0: average query expansion).
        k_reciprocal: k-reciprocal re-ranking of each query's candidates.
        k1: Size of the k-reciprocal neighbourhoods.
        k2: Size of the local query expansion.
        lambda_value: Weight of the original distance.
        depth: Candidates per query every variant is ranked and scored on.
    """

    whitening: bool = False
    whitening_fit: str | None = None
    whitening_dim: int | None = None
    whitening_shrinkage: float = 0.1
    dba: bool = False
    dba_n: int = 2
    dba_alpha: float = 3.0
    qe: bool = False
    qe_n: int = 2
    qe_alpha: float = 3.0
    k_reciprocal: bool = False
    k1: int = 20
    k2: int = 6
    lambda_value: float = 0.3
    depth: int = 100

    @property
    def enabled(self) -> list[str]:
        """The enabled steps, in the order they are applied."""
        return [step for step in STEPS if getattr(self, step)]


def variant_steps(spec: PostprocessSpec) -> dict[str, list[str]]:
    """``{variant name: steps}``: the baseline, each enabled step alone, and all of them."""
    variants: dict[str, list[str]] = {"baseline": []}
    for step in spec.enabled:
        variants[step] = [step]
    if len(spec.enabled) > 1:
        variants["+".join(spec.enabled)] = spec.enabled
    return variants


def rank_variant(
    query: EmbeddingSet,
    gallery: EmbeddingSet,
    steps: Sequence[str],
    spec: PostprocessSpec,
    metric: str = "cosine",
    exclude_self: bool = False,
) -> SearchResult:
    """The top-``depth`` ranking of ``query`` against ``gallery`` after ``steps``.

    Args:
        query: Query embeddings.
        gallery: Gallery embeddings.
        steps: Names from :data:`STEPS`, applied in :data:`STEPS` order.
        spec: Parameters of the steps.
        metric: Metric of the plain search; whitening, DBA and QE work in cosine space, and so
            does k-reciprocal re-ranking after them or when ``metric`` is "ip".
        exclude_self: Queries are gallery items (matched by id), never their own neighbour.

    Returns:
        ``(Q, depth)`` ranking into ``gallery``'s rows, best first.
    """
    unknown = sorted(set(steps) - set(STEPS))
    if unknown:
        raise ValueError(f"unknown post-processing step(s) {unknown}; valid names: {', '.join(STEPS)}")
    depth = min(spec.depth, len(gallery) - int(exclude_self))
    if depth < 1:
        raise ValueError("the gallery is too small to rank anything")
    queries, items = query.embeddings, gallery.embeddings
    if steps and (set(steps) - {"k_reciprocal"} or metric not in _RERANK_METRICS):
        # Whitening, DBA and QE give unit vectors compared by cosine; k-reciprocal re-ranking
        # alone keeps the plain search's metric when it is a distance it supports.
        metric = "cosine"
    if "whitening" in steps:
        fit_on = EmbeddingSet.load(spec.whitening_fit).embeddings if spec.whitening_fit else items
        whitening = PCAWhitening.fit(fit_on, dim=spec.whitening_dim, shrinkage=spec.whitening_shrinkage)
        queries, items = whitening.transform(queries), whitening.transform(items)

    def neighbours(base: EmbeddingSet, rows: np.ndarray, k: int, own: bool) -> SearchResult:
        return search_embeddings(
            _with(base, rows), _with(gallery, items), k=k, metric=metric, exclude_self=own
        )

    if "dba" in steps:
        around = neighbours(gallery, items, min(spec.dba_n + 1, len(gallery)), False)
        items = database_augmentation(items, around, n=spec.dba_n, alpha=spec.dba_alpha)
    if "qe" in steps:
        first = neighbours(query, queries, spec.qe_n, exclude_self)
        queries = query_expansion(queries, items, first, n=spec.qe_n, alpha=spec.qe_alpha)
    if "k_reciprocal" in steps:
        needed = max(spec.k1, spec.k2 - 1)
        if min(depth, len(gallery) - 1) < needed:
            raise ValueError(
                f"k-reciprocal re-ranking with k1={spec.k1}, k2={spec.k2} needs {needed} "
                f"candidates per query and as many other gallery items, but postprocess.depth="
                f"{spec.depth} and a gallery of {len(gallery)} give {min(depth, len(gallery) - 1)}; "
                "raise postprocess.depth or lower postprocess.k1"
            )
    candidates = neighbours(query, queries, depth, exclude_self)
    if "k_reciprocal" not in steps:
        return candidates
    width = min(max(spec.k1, spec.k2 - 1) + 1, len(gallery))
    around = neighbours(gallery, items, width, False)
    return k_reciprocal_rerank(
        queries, items, candidates, around, k1=spec.k1, k2=spec.k2,
        lambda_value=spec.lambda_value, metric=metric,
    )


def ranking_metrics(
    result: SearchResult,
    query_labels: Sequence[str],
    gallery_labels: Sequence[str],
    ks: Sequence[int] = (1, 5, 10),
    map_at: int = 5,
    weights: Mapping[int, float] | None = None,
    own_rows: np.ndarray | None = None,
) -> dict[str, float]:
    """Metrics of a top-``K`` ranking: Recall@K, Precision@10, MAP@K, the weighted top-k score,
    and MAP@R where every query's ``R`` fits in ``K``.

    As :func:`lookalike.metrics.retrieval.retrieval_metrics` (so a variant's row compares with
    the run's ``metrics.json``), the average runs over the labelled queries with at least one
    relevant gallery item; the others are left out.

    Args:
        result: ``(Q, K)`` ranking into the gallery.
        query_labels: ``Q`` labels (None: unlabelled).
        gallery_labels: ``N`` labels (None: never relevant).
        ks: Recall cut-offs.
        map_at: K of MAP@K.
        weights: Weighted top-k score weights ``{k: weight}``.
        own_rows: ``(Q,)`` gallery row of each query's own image, -1 where it has none (see
            :func:`lookalike.search.topk.self_exclusion`); that row is not counted as relevant.
    """
    codes = encode_labels(query_labels, gallery_labels)
    matches = relevance(result.indices, codes)
    num_relevant = codes.num_relevant()
    if own_rows is not None:
        own_rows = np.asarray(own_rows, dtype=np.int64)
        own_relevant = relevance(own_rows[:, None], codes)[:, 0]
        num_relevant = num_relevant - own_relevant
    evaluated = num_relevant > 0
    if not evaluated.any():
        logger.warning("no query has a relevant item in the gallery; every metric is NaN")
    matches, num_relevant = matches[evaluated], num_relevant[evaluated]
    width = matches.shape[1]

    def mean(values: np.ndarray) -> float:
        return float(values.mean()) if values.size else float("nan")

    metrics = {f"recall@{k}": mean(recall_at_k(matches, k, "none")) for k in ks if k <= width}
    if width >= 10:
        metrics["precision@10"] = mean(precision_at_k(matches, 10, "none"))
    if width >= map_at:
        metrics[f"map@{map_at}"] = mean(map_at_k(matches, num_relevant, map_at, "none"))
    weights = dict(DEFAULT_TOPK_WEIGHTS if weights is None else weights)
    if max(weights) <= width:
        metrics["weighted_topk"] = mean(weighted_topk(matches, weights, "none"))
    if num_relevant.max(initial=0) <= width:
        metrics["map@r"] = mean(map_at_r(matches, num_relevant, "none"))
    return metrics


def compare_variants(
    query: EmbeddingSet,
    gallery: EmbeddingSet,
    spec: PostprocessSpec,
    metric: str = "cosine",
    exclude_self: bool = False,
    ks: Sequence[int] = (1, 5, 10),
    map_at: int = 5,
    weights: Mapping[int, float] | None = None,
    baseline: SearchResult | None = None,
) -> dict[str, dict[str, float]]:
    """``{variant: metrics}`` for the baseline, each enabled step, and all enabled steps.

    Args:
        baseline: The run's own exact ranking of ``query`` (at least ``spec.depth`` deep, or the
            whole gallery): scored as the baseline instead of ranking the gallery again.
    """
    depth = min(spec.depth, len(gallery) - int(exclude_self))
    if baseline is not None and (len(baseline) != len(query) or baseline.k < depth):
        raise ValueError(
            f"the baseline ranking holds {len(baseline)} x {baseline.k} neighbours; "
            f"variants need {len(query)} x {depth}"
        )
    own_rows = self_exclusion(query.ids, gallery.ids) if exclude_self else None
    table = {}
    for name, steps in variant_steps(spec).items():
        if not steps and baseline is not None:
            table[name] = ranking_metrics(
                baseline.top(depth), query.labels, gallery.labels, ks, map_at, weights, own_rows
            )
            continue
        logger.info("ranking variant %s", name)
        result = rank_variant(query, gallery, steps, spec, metric, exclude_self)
        table[name] = ranking_metrics(
            result, query.labels, gallery.labels, ks, map_at, weights, own_rows
        )
    return table


def write_variants_csv(table: Mapping[str, Mapping[str, float]], path: str | Path) -> Path:
    """One row per variant, one column per metric."""
    from lookalike.utils.atomic import atomic_write_text

    columns = list(dict.fromkeys(key for row in table.values() for key in row))
    lines = [",".join(["variant", *columns])]
    for name, row in table.items():
        lines.append(",".join([name, *(f"{row[c]:.6f}" if c in row else "" for c in columns)]))
    atomic_write_text(path, "\n".join(lines) + "\n")
    return Path(path)


def _with(base: EmbeddingSet, rows: np.ndarray) -> EmbeddingSet:
    """``base`` with its vectors replaced (the same ids, paths and labels)."""
    return EmbeddingSet(rows, list(base.ids), list(base.paths), list(base.labels), {})
