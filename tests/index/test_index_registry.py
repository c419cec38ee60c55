"""Contract tests over every registered index, and registry errors."""

from __future__ import annotations

import numpy as np
import pytest

from lookalike.index import INDEXES, Index, create_index, exact_search

SMALL_PARAMS = {
    "ivf_flat": {"nlist": 4, "nprobe": 4},
    "ivf_pq": {"nlist": 4, "m": 8, "nbits": 6, "nprobe": 4},
}
CASES = [
    (kind, metric)
    for kind in INDEXES.names()
    for metric in ("cosine", "ip", "l2", "l1")
    if metric in INDEXES.get(kind).supported_metrics
]


def test_all_expected_kinds_are_registered() -> None:
    assert {"exact_torch", "flat", "ivf_flat", "ivf_pq", "hnsw"} <= set(INDEXES.names())


@pytest.mark.parametrize(("kind", "metric"), CASES)
def test_index_contract(kind: str, metric: str) -> None:
    rng = np.random.default_rng(4)
    gallery = rng.normal(size=(300, 8)).astype(np.float32)
    queries = rng.normal(size=(9, 8)).astype(np.float32)
    index = create_index(kind, 8, metric, **SMALL_PARAMS.get(kind, {}))
    assert isinstance(index, Index) and index.kind == kind
    assert index.dim == 8 and index.metric.name == metric and index.ntotal == 0
    with pytest.raises(ValueError, match="empty"):
        index.search(queries, 3)
    index.add(gallery)
    assert index.is_trained and index.ntotal == 300
    result = index.search(queries, 7)
    assert result.scores.shape == result.indices.shape == (9, 7)
    assert result.scores.dtype == np.float32 and result.indices.dtype == np.int64
    assert ((result.indices >= 0) & (result.indices < 300)).all()
    assert result.higher_is_better == index.metric.higher_is_better
    ordered = result.scores if result.higher_is_better else -result.scores
    assert (np.diff(ordered, axis=1) <= 1e-5).all()
    # Each query's best match is found by every index when the query is a gallery row.
    own = index.search(gallery[:5], 1)
    if metric != "ip":
        np.testing.assert_array_equal(own.indices[:, 0], np.arange(5))
    if kind != "ivf_pq":  # product-quantised codes give approximate scores
        exact = exact_search(gallery[:5], gallery, 1, metric)
        np.testing.assert_allclose(own.scores, exact.scores, rtol=1e-4, atol=5e-3)
    with pytest.raises(ValueError, match=r"shape \(N, 8\)"):
        index.search(queries[:, :4], 3)
    with pytest.raises(ValueError, match="k must be"):
        index.search(queries, 0)
    assert kind in repr(index) or type(index).__name__ in repr(index)


def test_unknown_kind_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="unknown index 'annoy'; valid names: exact_torch, flat"):
        create_index("annoy", 8)


def test_unknown_metric_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="unknown metric 'hamming'; valid names: cosine, ip, l1"):
        create_index("flat", 8, "hamming")


def test_unknown_parameter_lists_the_entry_parameters() -> None:
    with pytest.raises(ValueError, match="hnsw index does not take nlist; its parameters: M, "):
        create_index("hnsw", 8, nlist=4)


def test_bad_device_and_dimension() -> None:
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        create_index("flat", 8, device="tpu")
    with pytest.raises(ValueError, match="dimension must be positive"):
        create_index("exact_torch", 0)
