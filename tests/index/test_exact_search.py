"""Chunked exact search against a naive full-matrix numpy loop."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest
import torch
from naive_reference import METRIC_NAMES, naive_scores

from lookalike.index import ExactTorchIndex, create_index, exact_search
from lookalike.index.metrics import Metric, get_metric


def naive_topk(
    queries: np.ndarray, gallery: np.ndarray, k: int, metric: str, exclude: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Reference top-k with -1 / worst-score padding."""
    scores = naive_scores(queries, gallery, metric)
    higher = get_metric(metric).higher_is_better
    worst = -np.inf if higher else np.inf
    if exclude is not None:
        for q, row in enumerate(exclude):
            if row >= 0:
                scores[q, row] = np.nan
    out_scores = np.full((len(queries), k), worst)
    out_indices = np.full((len(queries), k), -1, dtype=np.int64)
    for q in range(len(queries)):
        valid = np.flatnonzero(~np.isnan(scores[q]))
        order = valid[np.argsort(-scores[q, valid] if higher else scores[q, valid], kind="stable")]
        order = order[:k]
        out_indices[q, : len(order)] = order
        out_scores[q, : len(order)] = scores[q, order]
    return out_scores, out_indices


def assert_matches_reference(
    scores: np.ndarray,
    indices: np.ndarray,
    ref_scores: np.ndarray,
    ref_indices: np.ndarray,
    full_scores: np.ndarray,
) -> None:
    """Same scores; same indices except where two gallery rows tie on score."""
    np.testing.assert_allclose(scores, ref_scores, rtol=1e-5, atol=1e-4)
    assert ((indices == -1) == (ref_indices == -1)).all()
    for q, col in zip(*np.nonzero(indices != ref_indices)):
        tied = full_scores[q, indices[q, col]]
        assert abs(tied - ref_scores[q, col]) < 1e-4, (q, col)


@pytest.fixture
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    return rng.normal(size=(23, 8)).astype(np.float32), rng.normal(size=(101, 8)).astype(np.float32)


@pytest.mark.parametrize("metric", METRIC_NAMES)
@pytest.mark.parametrize(
    ("k", "chunk_size", "gallery_chunk_size"),
    [(5, 1024, 16384), (5, 7, 13), (10, 23, 101), (1, 4, 100), (150, 5, 17), (101, 1, 1)],
)
def test_exact_search_matches_naive(
    data: tuple[np.ndarray, np.ndarray],
    metric: str,
    k: int,
    chunk_size: int,
    gallery_chunk_size: int,
) -> None:
    queries, gallery = data
    result = exact_search(queries, gallery, k, metric, chunk_size, gallery_chunk_size)
    ref_scores, ref_indices = naive_topk(queries, gallery, k, metric)
    assert result.scores.shape == result.indices.shape == (len(queries), k)
    assert result.higher_is_better == get_metric(metric).higher_is_better
    full = naive_scores(queries, gallery, metric)
    assert_matches_reference(result.scores, result.indices, ref_scores, ref_indices, full)


def test_k_larger_than_gallery_is_padded(data: tuple[np.ndarray, np.ndarray]) -> None:
    queries, gallery = data
    for metric, worst in (("cosine", -np.inf), ("l2", np.inf)):
        result = exact_search(queries, gallery[:3], 5, metric, gallery_chunk_size=2)
        assert (result.indices[:, 3:] == -1).all()
        assert (result.scores[:, 3:] == worst).all()
        assert sorted(result.indices[0, :3].tolist()) == [0, 1, 2]


def test_single_query(data: tuple[np.ndarray, np.ndarray]) -> None:
    queries, gallery = data
    result = exact_search(queries[:1], gallery, 4, "l2", chunk_size=3, gallery_chunk_size=10)
    ref_scores, ref_indices = naive_topk(queries[:1], gallery, 4, "l2")
    np.testing.assert_array_equal(result.indices, ref_indices)
    np.testing.assert_allclose(result.scores, ref_scores, atol=1e-5)


@pytest.mark.parametrize("metric", METRIC_NAMES)
def test_exclude_drops_the_given_row(data: tuple[np.ndarray, np.ndarray], metric: str) -> None:
    queries, gallery = data
    gallery = np.concatenate([gallery, queries])  # query q is gallery row 101 + q
    exclude = np.arange(101, 101 + len(queries))
    exclude[::3] = -1  # some queries keep their own row
    result = exact_search(queries, gallery, 6, metric, chunk_size=5, gallery_chunk_size=17,
                          exclude=exclude)
    ref_scores, ref_indices = naive_topk(queries, gallery, 6, metric, exclude)
    full = naive_scores(queries, gallery, metric)
    assert_matches_reference(result.scores, result.indices, ref_scores, ref_indices, full)
    assert not (result.indices[1] == exclude[1]).any()
    if metric != "ip":  # a query that keeps its own row finds it first (not so for raw ip)
        assert result.indices[0, 0] == 101


def test_exclude_leaves_padding_when_gallery_runs_out() -> None:
    gallery = np.eye(3, dtype=np.float32)
    result = exact_search(gallery, gallery, 3, "cosine", gallery_chunk_size=1,
                          exclude=np.array([0, 1, 2]))
    assert (result.indices[:, 2] == -1).all() and (result.scores[:, 2] == -np.inf).all()
    for q in range(3):
        assert q not in result.indices[q].tolist()


@dataclass(frozen=True)
class SpyMetric(Metric):
    """A metric recording the shape of every score block it builds."""

    shapes: list[tuple[int, int]] = field(default_factory=list, compare=False)

    def pairwise(self, queries: torch.Tensor, gallery: torch.Tensor) -> torch.Tensor:
        self.shapes.append((queries.shape[0], gallery.shape[0]))
        return super().pairwise(queries, gallery)


def test_never_builds_a_block_larger_than_the_chunks(data: tuple[np.ndarray, np.ndarray]) -> None:
    queries, gallery = data
    spy = SpyMetric("l2", higher_is_better=False, normalize=False)
    exact_search(queries, gallery, 5, spy, chunk_size=4, gallery_chunk_size=30)
    assert max(q for q, _ in spy.shapes) == 4 and max(g for _, g in spy.shapes) == 30
    assert sum(q * g for q, g in spy.shapes) == len(queries) * len(gallery)


def test_accepts_tensors_and_empty_queries(data: tuple[np.ndarray, np.ndarray]) -> None:
    queries, gallery = data
    from_numpy = exact_search(queries, gallery, 3, "ip")
    from_torch = exact_search(torch.from_numpy(queries), torch.from_numpy(gallery), 3, "ip")
    np.testing.assert_array_equal(from_numpy.indices, from_torch.indices)
    empty = exact_search(queries[:0], gallery, 3, "ip")
    assert empty.scores.shape == (0, 3)


def test_bad_input_raises(data: tuple[np.ndarray, np.ndarray]) -> None:
    queries, gallery = data
    with pytest.raises(ValueError, match="dimension"):
        exact_search(queries[:, :4], gallery, 3)
    with pytest.raises(ValueError, match="k must be"):
        exact_search(queries, gallery, 0)
    with pytest.raises(ValueError, match="exclude has"):
        exact_search(queries, gallery, 3, exclude=np.zeros(2, dtype=np.int64))
    with pytest.raises(ValueError, match="exclude entries"):
        exact_search(queries, gallery, 3, exclude=np.full(len(queries), 500))
    bad = queries.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        exact_search(bad, gallery, 3)
    with pytest.raises(ValueError, match="valid names"):
        exact_search(queries, gallery, 3, metric="hamming")


def test_index_adds_in_parts_and_matches_function(data: tuple[np.ndarray, np.ndarray]) -> None:
    queries, gallery = data
    index = create_index("exact_torch", 8, "cosine", chunk_size=6, gallery_chunk_size=20)
    assert isinstance(index, ExactTorchIndex) and index.is_trained
    index.add(gallery[:40])
    index.add(gallery[40:])
    assert index.ntotal == len(gallery)
    result = index.search(queries, 7)
    reference = exact_search(queries, gallery, 7, "cosine")
    np.testing.assert_array_equal(result.indices, reference.indices)
    np.testing.assert_allclose(result.scores, reference.scores, atol=1e-6)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("metric", METRIC_NAMES)
def test_cuda_matches_cpu(data: tuple[np.ndarray, np.ndarray], metric: str) -> None:
    queries, gallery = data
    on_cpu = exact_search(queries, gallery, 5, metric, chunk_size=7, gallery_chunk_size=13)
    on_gpu = exact_search(queries, gallery, 5, metric, chunk_size=7, gallery_chunk_size=13,
                          device="cuda")
    np.testing.assert_array_equal(on_cpu.indices, on_gpu.indices)
    np.testing.assert_allclose(on_cpu.scores, on_gpu.scores, rtol=1e-4, atol=1e-4)
    index = create_index("exact_torch", 8, metric, device="cuda")
    index.add(gallery)
    np.testing.assert_array_equal(index.search(queries, 5).indices, on_cpu.indices)
