"""Chunked evaluation against a naive full sort per query, written with plain Python loops."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from ranked_metrics import with_per_query

from lookalike.metrics import (
    evaluate_retrieval,
    map_at_k,
    precision_at_k,
    recall_at_k,
    relevance_from_labels,
)

WEIGHTS = {1: 600, 5: 300, 10: 100}


def _tied_data(seed: int, queries: int = 14, gallery: int = 40):
    """Small-integer embeddings (exact float32 scores, many ties) and string labels."""
    rng = np.random.default_rng(seed)
    gallery_embeddings = rng.integers(-1, 2, (gallery, 3)).astype(np.float32)
    gallery_labels = [f"class{c}" for c in rng.integers(0, 6, gallery)]
    query_embeddings = rng.integers(-1, 2, (queries, 3)).astype(np.float32)
    query_labels = [f"class{c}" for c in rng.integers(0, 6, queries)]
    query_labels[-1] = "unseen"  # a query without positives
    return query_embeddings, query_labels, gallery_embeddings, gallery_labels


def _naive_score(metric: str, a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64), b.astype(np.float64)
    if metric == "ip":
        return sum(x * y for x, y in zip(a, b))
    if metric == "l2":
        return math.sqrt(sum((x - y) ** 2 for x, y in zip(a, b)))
    return sum(abs(x - y) for x, y in zip(a, b))


def _naive_evaluate(queries, query_labels, gallery, gallery_labels, metric, self_index, junk, skip):
    higher_is_better = metric == "ip"
    per_query: dict[str, list[float]] = {}
    rankings, evaluated = [], []
    for q in range(len(queries)):
        scores = [_naive_score(metric, queries[q], gallery[g]) for g in range(len(gallery))]
        order = sorted(
            range(len(gallery)), key=lambda g: (-scores[g] if higher_is_better else scores[g], g)
        )
        removed = set(junk[q]) if junk is not None else set()
        if self_index is not None and self_index[q] >= 0:
            removed.add(int(self_index[q]))
        order = [g for g in order if g not in removed]
        rankings.append(order)
        relevant = [gallery_labels[g] == query_labels[q] for g in order]
        r = sum(relevant)
        evaluated.append(r > 0 or not skip)

        def precision_sum(cutoff: int, relevant=relevant) -> float:
            hits, total = 0, 0.0
            for i, is_relevant in enumerate(relevant[:cutoff]):
                if is_relevant:
                    hits += 1
                    total += hits / (i + 1)
            return total

        values = {f"recall@{k}": float(any(relevant[:k])) for k in (1, 2, 5, 10)}
        values["precision@10"] = sum(relevant[:10]) / 10
        values["map"] = precision_sum(len(relevant)) / r if r else 0.0
        values["map@5"] = precision_sum(5) / min(r, 5) if r else 0.0
        values["map@r"] = precision_sum(r) / r if r else 0.0
        values["weighted_topk"] = sum(w * values[f"recall@{k}"] for k, w in WEIGHTS.items())
        values["r_precision"] = sum(relevant[:r]) / r if r else 0.0
        for key, value in values.items():
            per_query.setdefault(key, []).append(value)
    evaluated = np.array(evaluated)
    summary = {key: float(np.mean(np.array(v)[evaluated])) for key, v in per_query.items()}
    return summary, per_query, rankings, evaluated


CASES = {
    "separate": dict(self_index=None, junk=None),
    "self": dict(self_index="diagonal", junk=None),
    "junk": dict(self_index=None, junk="random"),
    "self_and_junk": dict(self_index="partial", junk="random"),
}


def _case(name: str, seed: int):
    queries, query_labels, gallery, gallery_labels = _tied_data(seed)
    rng = np.random.default_rng(seed + 100)
    self_index = None
    if CASES[name]["self_index"] is not None:
        # The queries are copies of gallery rows (with the gallery's labels).
        rows = rng.choice(len(gallery), len(queries), replace=False)
        queries = gallery[rows].copy()
        query_labels = [gallery_labels[r] for r in rows]
        query_labels[0] = "lonely"  # a query without positives
        self_index = rows.copy()
        if CASES[name]["self_index"] == "partial":
            self_index[::3] = -1
    junk = None
    if CASES[name]["junk"] is not None:
        junk = [rng.choice(len(gallery), rng.integers(0, 5), replace=False) for _ in queries]
        # Every positive of query 2 is junk, so it has none left.
        positives = [g for g, label in enumerate(gallery_labels) if label == query_labels[2]]
        junk[2] = np.append(junk[2], positives)
        if self_index is not None:
            junk[1] = np.append(junk[1], self_index[1]) if self_index[1] >= 0 else junk[1]
    return queries, query_labels, gallery, gallery_labels, self_index, junk


@pytest.mark.parametrize("metric", ["ip", "l2"])
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("skip", [True, False])
def test_matches_naive_full_sort(metric: str, case: str, skip: bool) -> None:
    queries, query_labels, gallery, gallery_labels, self_index, junk = _case(case, seed=len(case))
    summary, per_query = with_per_query(
        queries, query_labels, gallery, gallery_labels, metric=metric, ks=(1, 2, 5, 10),
        self_index=self_index, junk=junk, weights=WEIGHTS, chunk_size=5,
        skip_queries_without_positives=skip)
    expected, expected_per_query, rankings, evaluated = _naive_evaluate(
        queries, query_labels, gallery, gallery_labels, metric, self_index, junk, skip
    )
    assert per_query.evaluated.tolist() == evaluated.tolist()
    assert summary["n_queries"] == len(queries)
    assert summary["n_queries_without_positives"] == int((per_query.num_relevant == 0).sum()) > 0
    expected_keys = {f"recall@{k}" for k in (1, 2, 5, 10)} | {
        "precision@10", "map", "map@5", "map@r", "weighted_topk"
    }
    assert set(summary) == expected_keys | {"n_queries", "n_queries_without_positives"}
    for key in expected_keys:
        assert summary[key] == pytest.approx(expected[key], abs=1e-12), key
    for key, values in per_query.values.items():
        np.testing.assert_allclose(values, expected_per_query[key], atol=1e-12, err_msg=key)
    top = per_query.neighbours.indices
    assert top.shape == (len(queries), 10)
    for q, ranking in enumerate(rankings):
        assert top[q].tolist() == ranking[:10]
        expected_scores = [_naive_score(metric, queries[q], gallery[g]) for g in ranking[:10]]
        np.testing.assert_allclose(per_query.neighbours.scores[q], expected_scores, rtol=1e-6)


def test_chunk_size_does_not_change_anything() -> None:
    queries, query_labels, gallery, gallery_labels, self_index, junk = _case("self_and_junk", 4)
    results = [
        with_per_query(
            queries, query_labels, gallery, gallery_labels, metric="ip", self_index=self_index,
            junk=junk, chunk_size=chunk)
        for chunk in (1, 7, len(queries), 1000)
    ]
    summary, per_query = results[0]
    for other_summary, other in results[1:]:
        assert other_summary == summary
        for key in per_query.values:
            np.testing.assert_array_equal(other.values[key], per_query.values[key])
        np.testing.assert_array_equal(other.neighbours.indices, per_query.neighbours.indices)
        np.testing.assert_array_equal(other.neighbours.scores, per_query.neighbours.scores)
        np.testing.assert_array_equal(other.first_positive_rank, per_query.first_positive_rank)


def test_agrees_with_pure_functions_on_its_own_neighbours() -> None:
    rng = np.random.default_rng(5)
    gallery = rng.normal(size=(60, 8)).astype(np.float32)
    gallery_labels = rng.integers(0, 8, 60)
    queries = gallery[:20]
    summary, per_query = with_per_query(
        queries, gallery_labels[:20], gallery, gallery_labels, self_index=np.arange(20),
        skip_queries_without_positives=False)
    matches, num_relevant = relevance_from_labels(
        per_query.neighbours.indices, gallery_labels[:20], gallery_labels
    )
    np.testing.assert_array_equal(num_relevant - 1, per_query.num_relevant)
    assert summary["recall@5"] == pytest.approx(recall_at_k(matches, 5))
    assert summary["precision@10"] == pytest.approx(precision_at_k(matches, 10))
    assert summary["map@5"] == pytest.approx(map_at_k(matches, num_relevant - 1, 5))
    assert np.all(per_query.neighbours.indices != np.arange(20)[:, None])


def test_labels_are_arbitrary_hashables() -> None:
    queries, query_labels, gallery, gallery_labels = _tied_data(7)
    as_ints = {name: i for i, name in enumerate(sorted(set(query_labels + gallery_labels)))}
    as_tuples = {name: ("tag", name) for name in as_ints}
    reference = evaluate_retrieval(queries, query_labels, gallery, gallery_labels, metric="l1")
    for mapping, container in ((as_ints, np.array), (as_tuples, list)):
        other = evaluate_retrieval(
            queries, [mapping[x] for x in query_labels], gallery,
            container([mapping[x] for x in gallery_labels]), metric="l1",
        )
        assert other == reference


def test_padding_when_the_gallery_is_smaller_than_k() -> None:
    gallery = np.eye(4, dtype=np.float32)
    summary, per_query = with_per_query(
        gallery, [0, 0, 1, 1], gallery, [0, 0, 1, 1], self_index=np.arange(4))
    assert per_query.neighbours.indices.shape == (4, 10)
    assert (per_query.neighbours.indices[:, 3:] == -1).all()
    assert np.isneginf(per_query.neighbours.scores[:, 3:]).all()
    assert summary["precision@10"] == pytest.approx(0.1)
    # All scores tie, so rows rank in gallery order: queries 0 and 1 find their positive first,
    # queries 2 and 3 find it third (after rows 0 and 1).
    assert summary["map"] == pytest.approx((1 + 1 + 1 / 3 + 1 / 3) / 4)
    np.testing.assert_array_equal(per_query.first_positive_rank, [1, 1, 3, 3])


def test_bad_input_raises_clear_errors() -> None:
    x = np.zeros((3, 4), np.float32)
    labels = [0, 1, 2]
    with pytest.raises(ValueError, match="valid names"):
        evaluate_retrieval(x, labels, x, labels, metric="hamming")
    with pytest.raises(ValueError, match="D=5"):
        evaluate_retrieval(x, labels, np.zeros((3, 5), np.float32), labels)
    with pytest.raises(ValueError, match="2 query labels"):
        evaluate_retrieval(x, labels[:2], x, labels)
    with pytest.raises(ValueError, match=r"gallery_labels\[1\] is None"):
        evaluate_retrieval(x, labels, x, [0, None, 2])
    with pytest.raises(ValueError, match="exclude_rows"):
        evaluate_retrieval(x, labels, x, labels, self_index=np.array([0, 1, 3]))
    with pytest.raises(ValueError, match="junk"):
        evaluate_retrieval(x, labels, x, labels, junk=[[0], [1]])
    with pytest.raises(ValueError, match="NaN"):
        evaluate_retrieval(np.full((3, 4), np.nan, np.float32), labels, x, labels)
    with pytest.raises(ValueError, match="ks"):
        evaluate_retrieval(x, labels, x, labels, ks=(0,))
    with pytest.raises(ValueError, match="chunk_size"):
        evaluate_retrieval(x, labels, x, labels, chunk_size=0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu() -> None:
    queries, query_labels, gallery, gallery_labels, self_index, junk = _case("self_and_junk", 9)
    results = [
        with_per_query(
            queries, query_labels, gallery, gallery_labels, metric="ip", self_index=self_index,
            junk=junk, chunk_size=4, device=device)
        for device in ("cpu", "cuda")
    ]
    assert results[0][0] == results[1][0]
    cpu, cuda = results[0][1].neighbours, results[1][1].neighbours
    np.testing.assert_array_equal(cpu.indices, cuda.indices)
