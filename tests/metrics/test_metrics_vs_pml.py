"""evaluate_retrieval against pytorch-metric-learning's AccuracyCalculator.

pml's metrics that coincide with ours (labels compared by equality, queries whose label has no
other reference item left out of the averages, as ours by default):

- ``precision_at_1`` == ``recall@1``;
- ``mean_average_precision`` with ``k=None`` (the whole reference set) == ``map``; with an integer
  k pml divides by R, not Kaggle's ``min(R, k)``, so it is not our ``map@k``;
- ``mean_average_precision_at_r`` (``k=None`` or ``"max_bin_count"``) == ``map@r``;
- ``r_precision`` == mean of the per-query ``r_precision``.

``get_accuracy(query, labels)`` without a reference uses the queries as the reference and drops
each query's own row (``ref_includes_query``), which is our ``self_index=np.arange(Q)``. pml ranks
with FAISS L2, whose tie order differs from ours, so the data here is continuous (no ties).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
from ranked_metrics import with_per_query

PML_METRICS = (
    "precision_at_1",
    "mean_average_precision",
    "mean_average_precision_at_r",
    "r_precision",
)


def _compare(pml: dict[str, float], summary: dict[str, float], per_query) -> None:
    assert summary["recall@1"] == pytest.approx(pml["precision_at_1"], abs=1e-9)
    assert summary["map"] == pytest.approx(pml["mean_average_precision"], abs=1e-9)
    assert summary["map@r"] == pytest.approx(pml["mean_average_precision_at_r"], abs=1e-9)
    r_precision = per_query.values["r_precision"][per_query.evaluated].mean()
    assert r_precision == pytest.approx(pml["r_precision"], abs=1e-9)


@pytest.mark.parametrize("metric", ["l2", "cosine"])
@pytest.mark.parametrize("k", [None, "max_bin_count"])
def test_query_set_is_the_gallery(metric: str, k: str | None) -> None:
    rng = np.random.default_rng(0)
    embeddings = rng.normal(size=(80, 6)).astype(np.float32)
    if metric == "cosine":  # L2 ranking of unit vectors is cosine ranking
        embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    labels = rng.integers(0, 12, 80)
    labels[:3] = [100, 101, 102]  # lone labels: no positive once the query itself is removed
    calculator = AccuracyCalculator(include=PML_METRICS, k=k, device=torch.device("cpu"))
    if k == "max_bin_count":
        # With k < R max, pml's mean_average_precision is truncated: compare MAP@R only.
        pml = calculator.get_accuracy(embeddings, labels, include=("mean_average_precision_at_r",))
    else:
        pml = calculator.get_accuracy(embeddings, labels)
    summary, per_query = with_per_query(
        embeddings, labels, embeddings, labels, metric=metric, self_index=np.arange(80),
        chunk_size=16)
    assert summary["n_queries_without_positives"] == 3
    if k == "max_bin_count":
        assert summary["map@r"] == pytest.approx(pml["mean_average_precision_at_r"], abs=1e-9)
    else:
        _compare(pml, summary, per_query)


def test_separate_queries_and_gallery() -> None:
    rng = np.random.default_rng(1)
    gallery = rng.normal(size=(90, 5)).astype(np.float32)
    gallery_labels = rng.integers(0, 10, 90)
    queries = rng.normal(size=(35, 5)).astype(np.float32)
    query_labels = rng.integers(0, 12, 35)  # labels 10 and 11 are absent from the gallery
    calculator = AccuracyCalculator(include=PML_METRICS, k=None, device=torch.device("cpu"))
    pml = calculator.get_accuracy(queries, query_labels, gallery, gallery_labels)
    summary, per_query = with_per_query(
        queries, query_labels, gallery, gallery_labels, metric="l2", chunk_size=7)
    assert summary["n_queries_without_positives"] == int(np.isin(query_labels, [10, 11]).sum()) > 0
    _compare(pml, summary, per_query)
