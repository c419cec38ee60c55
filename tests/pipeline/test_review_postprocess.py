"""Review of the post-processing variants' metrics against a naive recomputation per query.

Each variant's numbers in ``variants.csv`` must equal Recall@K, MAP@K and MAP@R recomputed by hand
from that variant's own re-ranked lists, with the run's rules: the query's own image is neither
ranked nor relevant (``R`` = class size minus one), unlabelled gallery items are never relevant,
and queries without a relevant gallery item are left out of the average (as ``metrics.json``).
"""

from __future__ import annotations

import numpy as np
import pytest

from lookalike.embed.store import EmbeddingSet
from lookalike.index.result import SearchResult
from lookalike.metrics.retrieval import retrieval_metrics
from lookalike.pipeline.postprocess import PostprocessSpec, compare_variants, rank_variant
from lookalike.ranking import rank
from lookalike.search.rerank import k_reciprocal_rerank


def _naive_metrics(
    lists: np.ndarray,
    query_labels: list,
    gallery_labels: list,
    own: list[int],
    ks=(1, 5, 10),
    map_at: int = 5,
) -> dict[str, float]:
    """Per-query loop: recall@k, precision@10, MAP@K (/ min(R, K)), MAP@R, weighted top-k."""
    rows: dict[str, list[float]] = {}
    for q, ranked in enumerate(lists.tolist()):
        label = query_labels[q]
        if label is None:
            continue
        relevant = {g for g, other in enumerate(gallery_labels) if other == label and g != own[q]}
        if not relevant:
            continue
        hits = [g in relevant for g in ranked]
        values = {f"recall@{k}": float(any(hits[:k])) for k in ks}
        values["precision@10"] = sum(hits[:10]) / 10
        found, total = 0, 0.0
        for position, hit in enumerate(hits[:map_at], start=1):
            if hit:
                found += 1
                total += found / position
        values[f"map@{map_at}"] = total / min(len(relevant), map_at)
        found, total = 0, 0.0
        for position, hit in enumerate(hits[: len(relevant)], start=1):
            if hit:
                found += 1
                total += found / position
        values["map@r"] = total / len(relevant)
        values["weighted_topk"] = 600 * any(hits[:1]) + 300 * any(hits[:5]) + 100 * any(hits[:10])
        for key, value in values.items():
            rows.setdefault(key, []).append(value)
    return {key: float(np.mean(value)) for key, value in rows.items()}


def _collection(seed: int = 0) -> EmbeddingSet:
    """Five classes of four, a singleton class, and two unlabelled distractors."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(5, 8))
    vectors = np.concatenate(
        [centres[np.arange(20) % 5] + 0.8 * rng.normal(size=(20, 8)), rng.normal(size=(3, 8))]
    )
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    labels: list = [str(i % 5) for i in range(20)] + ["alone", None, None]
    ids = [f"img{i}" for i in range(len(vectors))]
    return EmbeddingSet(vectors.astype(np.float32), ids, ids, labels)


SPEC = PostprocessSpec(
    whitening=True,
    dba=True,
    qe=True,
    k_reciprocal=True,
    k1=5,
    k2=2,
    depth=20,
    whitening_shrinkage=0.3,
)


def test_every_variant_equals_a_naive_recomputation_all_vs_all() -> None:
    """All-vs-all: own image excluded, a singleton class (no positives), None gallery items."""
    everything = _collection()
    table = compare_variants(everything, everything, SPEC, exclude_self=True)
    own = list(range(len(everything)))
    assert len(table) == 6
    for name, steps_table in table.items():
        steps = [] if name == "baseline" else name.split("+")
        result = rank_variant(everything, everything, steps, SPEC, exclude_self=True)
        assert not (result.indices == np.arange(len(everything))[:, None]).any(), name
        assert (result.indices >= 0).all(), name
        expected = _naive_metrics(result.indices, everything.labels, everything.labels, own)
        assert set(steps_table) == set(expected), name
        for key, value in expected.items():
            assert steps_table[key] == pytest.approx(value, abs=1e-12), (name, key)


def test_queries_outside_the_gallery_keep_their_full_class_size() -> None:
    """exclude_self with some queries absent from the gallery: only present ones lose one."""
    everything = _collection(seed=1)
    gallery = everything.select(np.arange(2, 23))
    table = compare_variants(everything, gallery, SPEC, exclude_self=True)
    own = [i - 2 if i >= 2 else -1 for i in range(len(everything))]
    result = rank_variant(everything, gallery, ["qe"], SPEC, exclude_self=True)
    expected = _naive_metrics(result.indices, everything.labels, gallery.labels, own)
    for key, value in expected.items():
        assert table["qe"][key] == pytest.approx(value, abs=1e-12), key


def test_baseline_row_equals_the_run_ranking_it_is_given() -> None:
    everything = _collection(seed=2)
    plain = rank_variant(everything, everything, [], SPEC, exclude_self=True)
    table = compare_variants(
        everything,
        everything,
        PostprocessSpec(qe=True, depth=20),
        exclude_self=True,
        baseline=plain,
    )
    expected = _naive_metrics(
        plain.indices, everything.labels, everything.labels, list(range(len(everything)))
    )
    for key, value in expected.items():
        assert table["baseline"][key] == pytest.approx(value, abs=1e-12), key


@pytest.mark.parametrize("metric", ["l2", "l1"])
def test_k_reciprocal_alone_keeps_a_distance_metric(metric: str) -> None:
    """With lambda = 1 the final distance is the original one: the metric's own order."""
    rng = np.random.default_rng(3)
    vectors = (rng.normal(size=(30, 6)) * rng.uniform(0.2, 3.0, size=(30, 1))).astype(np.float32)
    ids = [f"v{i}" for i in range(30)]
    items = EmbeddingSet(vectors, ids, ids, [str(i % 3) for i in range(30)])
    spec = PostprocessSpec(k_reciprocal=True, k1=4, k2=2, lambda_value=1.0, depth=29)
    reranked = rank_variant(items, items, ["k_reciprocal"], spec, metric=metric, exclude_self=True)
    difference = vectors[:, None, :].astype(np.float64) - vectors[None, :, :]
    distance = np.abs(difference).sum(-1) if metric == "l1" else (difference**2).sum(-1)
    np.fill_diagonal(distance, np.inf)
    order = np.argsort(distance, axis=1, kind="stable")[:, :29]
    np.testing.assert_array_equal(reranked.indices, order)
    # lambda < 1: the same as calling the re-ranker with that metric on exact lists.
    spec = PostprocessSpec(k_reciprocal=True, k1=4, k2=2, lambda_value=0.3, depth=29)
    reranked = rank_variant(items, items, ["k_reciprocal"], spec, metric=metric, exclude_self=True)
    gallery_order = np.argsort(np.where(np.isinf(distance), -1, distance), axis=1, kind="stable")
    direct = k_reciprocal_rerank(
        vectors,
        vectors,
        SearchResult(np.take_along_axis(distance, order, 1), order, False),
        SearchResult(
            np.take_along_axis(distance, gallery_order, 1)[:, :5], gallery_order[:, :5], False
        ),
        k1=4,
        k2=2,
        lambda_value=0.3,
        metric=metric,
    )
    np.testing.assert_array_equal(reranked.indices, direct.indices)


def test_labelled_queries_baseline_row_equals_retrieval_metrics() -> None:
    """As ``evaluate`` calls it: labelled queries against the whole collection, a singleton class
    among them; the baseline row must equal the run's ``metrics.json`` numbers."""
    everything = _collection(seed=4)
    labelled = np.flatnonzero([label is not None for label in everything.labels])
    query = everything.select(labelled)
    ranking = rank(
        query.embeddings,
        everything.embeddings,
        query.labels,
        everything.labels,
        metric="cosine",
        k=20,
        exclude_rows=labelled,
        allow_unlabelled=True,
    )
    summary = retrieval_metrics(ranking).summary
    assert summary["n_queries_without_positives"] == 1
    for baseline in (None, ranking.neighbours):
        row = compare_variants(
            query,
            everything,
            PostprocessSpec(qe=True, depth=20),
            exclude_self=True,
            baseline=baseline,
        )["baseline"]
        for key, value in row.items():
            assert value == pytest.approx(summary[key], abs=1e-12), key


def test_inner_product_baseline_keeps_its_metric() -> None:
    rng = np.random.default_rng(5)
    vectors = (rng.normal(size=(12, 4)) * rng.uniform(0.2, 3.0, size=(12, 1))).astype(np.float32)
    ids = [f"v{i}" for i in range(12)]
    items = EmbeddingSet(vectors, ids, ids, [str(i % 2) for i in range(12)])
    plain = rank_variant(
        items, items, [], PostprocessSpec(depth=11), metric="ip", exclude_self=True
    )
    scores = vectors.astype(np.float64) @ vectors.T.astype(np.float64)
    np.fill_diagonal(scores, -np.inf)
    np.testing.assert_array_equal(plain.indices, np.argsort(-scores, axis=1, kind="stable")[:, :11])


def test_k_reciprocal_larger_than_the_gallery_names_the_setting() -> None:
    items = _collection()
    for spec in (
        PostprocessSpec(k_reciprocal=True, k1=30, depth=100),
        PostprocessSpec(k_reciprocal=True, k1=10, depth=8),
    ):
        with pytest.raises(ValueError, match="postprocess.depth=.*lower postprocess.k1"):
            compare_variants(items, items, spec, exclude_self=True)
    small = items.select(np.arange(12))
    with pytest.raises(ValueError, match="a gallery of 12 give 11"):
        rank_variant(small, small, ["k_reciprocal"], PostprocessSpec(k_reciprocal=True, k1=12))


def test_all_vs_all_query_expansion_leaves_out_the_own_image() -> None:
    """αQE over the top-n *other* images, then the ranking without the query's own row."""
    everything = _collection(seed=6)
    spec = PostprocessSpec(qe=True, qe_n=3, qe_alpha=3.0, depth=22)
    result = rank_variant(everything, everything, ["qe"], spec, exclude_self=True)
    unit = everything.embeddings.astype(np.float64)
    for q in range(len(unit)):
        similarity = unit @ unit[q]
        similarity[q] = -np.inf
        top = np.argsort(-similarity, kind="stable")[:3]
        expanded = unit[q] + sum(max(0.0, similarity[i]) ** 3 * unit[i] for i in top)
        final = unit @ (expanded / np.linalg.norm(expanded))
        final[q] = -np.inf
        assert result.indices[q].tolist() == np.argsort(-final, kind="stable")[:22].tolist()
