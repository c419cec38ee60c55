"""FAISS indexes against exact_torch and a naive numpy loop."""

from __future__ import annotations

import logging

import faiss
import numpy as np
import pytest
from naive_reference import METRIC_NAMES, naive_scores

from lookalike.index import create_index, exact_search
from lookalike.index.metrics import get_metric


def naive_order(scores: np.ndarray, metric: str, k: int) -> np.ndarray:
    key = -scores if get_metric(metric).higher_is_better else scores
    return np.argsort(key, axis=1, kind="stable")[:, :k]


def recall_at(found: np.ndarray, truth: np.ndarray) -> float:
    """Fraction of the true top-k found in the approximate top-k."""
    hits = sum(len(set(f.tolist()) & set(t.tolist())) for f, t in zip(found, truth))
    return hits / truth.size


@pytest.fixture(scope="module")
def small() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(2)
    queries = rng.normal(size=(30, 12)).astype(np.float32)
    return queries, rng.normal(size=(400, 12)).astype(np.float32)


@pytest.fixture(scope="module")
def clustered() -> tuple[np.ndarray, np.ndarray]:
    """2000 gallery rows around 40 centres, and 50 queries near them."""
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(40, 16)) * 3
    gallery = centres[rng.integers(0, 40, 2000)] + rng.normal(size=(2000, 16))
    queries = centres[rng.integers(0, 40, 50)] + rng.normal(size=(50, 16))
    return queries.astype(np.float32), gallery.astype(np.float32)


@pytest.mark.parametrize("metric", METRIC_NAMES)
def test_flat_matches_exact_torch_and_naive(
    small: tuple[np.ndarray, np.ndarray], metric: str
) -> None:
    queries, gallery = small
    index = create_index("flat", 12, metric)
    index.add(gallery)
    result = index.search(queries, 10)
    reference = exact_search(queries, gallery, 10, metric, chunk_size=7, gallery_chunk_size=50)
    full = naive_scores(queries, gallery, metric)
    truth = naive_order(full, metric, 10)
    for found in (result, reference):
        np.testing.assert_allclose(
            found.scores, np.take_along_axis(full, truth, 1), rtol=1e-5, atol=1e-4
        )
        mismatch = found.indices != truth
        tied = np.take_along_axis(full, found.indices, 1)[mismatch]
        np.testing.assert_allclose(tied, np.take_along_axis(full, truth, 1)[mismatch], atol=1e-4)
    assert result.higher_is_better == reference.higher_is_better


APPROXIMATE = [
    ("hnsw", {"M": 32, "ef_construction": 80, "ef_search": 128}, METRIC_NAMES),
    ("ivf_flat", {"nlist": 16, "nprobe": 8}, METRIC_NAMES),
    ("ivf_pq", {"nlist": 16, "nprobe": 8, "m": 16, "nbits": 8}, ["cosine", "ip", "l2"]),
]


@pytest.mark.parametrize(
    ("kind", "params", "metric"),
    [(kind, params, metric) for kind, params, metrics in APPROXIMATE for metric in metrics],
)
def test_approximate_recall_against_exact(
    clustered: tuple[np.ndarray, np.ndarray], kind: str, params: dict, metric: str
) -> None:
    queries, gallery = clustered
    index = create_index(kind, 16, metric, **params)
    index.add(gallery)
    result = index.search(queries, 10)
    exact = exact_search(queries, gallery, 10, metric)
    assert recall_at(result.indices, exact.indices) >= 0.9
    assert (result.indices >= 0).all()
    if kind != "ivf_pq":  # full vectors are stored: returned scores are the true scores
        full = naive_scores(queries, gallery, metric)
        np.testing.assert_allclose(
            result.scores, np.take_along_axis(full, result.indices, 1), rtol=1e-5, atol=1e-4
        )
    ordered = result.scores if result.higher_is_better else -result.scores
    assert (np.diff(ordered, axis=1) <= 1e-6).all()


@pytest.mark.parametrize("metric", ["l2", "l1", "cosine"])
def test_ivf_visiting_every_cell_is_exact(
    small: tuple[np.ndarray, np.ndarray], metric: str
) -> None:
    queries, gallery = small
    index = create_index("ivf_flat", 12, metric, nlist=8, nprobe=1)
    index.add(gallery)
    index.nprobe = 8
    result = index.search(queries, 5)
    exact = exact_search(queries, gallery, 5, metric)
    np.testing.assert_array_equal(result.indices, exact.indices)
    np.testing.assert_allclose(result.scores, exact.scores, rtol=1e-5, atol=1e-4)
    assert index.params == {"nlist": 8, "nprobe": 8}


def test_ivf_pq_rejects_l1_naming_the_kinds_that_support_it() -> None:
    with pytest.raises(ValueError, match="ivf_pq.*l1.*exact_torch, flat, hnsw, ivf_flat"):
        create_index("ivf_pq", 16, "l1")


def test_auto_training_on_first_add_is_logged(
    small: tuple[np.ndarray, np.ndarray], caplog: pytest.LogCaptureFixture
) -> None:
    queries, gallery = small
    index = create_index("ivf_flat", 12, "l2", nlist=4)
    assert not index.is_trained
    with caplog.at_level(logging.INFO, logger="lookalike.index.faiss_index"):
        index.add(gallery)
    assert index.is_trained and index.ntotal == len(gallery)
    assert "training it on the 400 vectors" in caplog.text
    with pytest.raises(ValueError, match="cannot retrain"):
        index.train(gallery)


def test_explicit_training_then_add(small: tuple[np.ndarray, np.ndarray]) -> None:
    queries, gallery = small
    index = create_index("ivf_pq", 12, "ip", nlist=4, m=4, nbits=4)
    index.train(gallery)
    assert index.is_trained and index.ntotal == 0
    index.add(gallery[:100])
    index.add(gallery[100:])
    assert index.ntotal == len(gallery)
    assert index.search(queries, 3).indices.shape == (30, 3)


def test_too_few_vectors_suggest_smaller_parameters(small: tuple[np.ndarray, np.ndarray]) -> None:
    _, gallery = small
    with pytest.raises(ValueError, match="nlist=100 needs at least 100.*got 50.*smaller nlist"):
        create_index("ivf_flat", 12, "cosine", nlist=100).add(gallery[:50])
    with pytest.raises(ValueError, match="nbits=8 needs at least 256.*got 200.*smaller nbits"):
        create_index("ivf_pq", 12, "cosine", nlist=4, m=4, nbits=8).train(gallery[:200])


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf_flat"])
def test_k_larger_than_index_is_padded(small: tuple[np.ndarray, np.ndarray], kind: str) -> None:
    queries, gallery = small
    params = {"nlist": 1} if kind == "ivf_flat" else {}
    for metric, worst in (("cosine", -np.inf), ("l2", np.inf)):
        index = create_index(kind, 12, metric, **params)
        index.add(gallery[:4])
        result = index.search(queries, 6)
        assert (result.indices[:, 4:] == -1).all() and (result.scores[:, 4:] == worst).all()
        assert sorted(result.indices[0, :4].tolist()) == [0, 1, 2, 3]


def test_bad_parameters_raise() -> None:
    with pytest.raises(ValueError, match="divisible by m"):
        create_index("ivf_pq", 12, "l2", m=5)
    with pytest.raises(ValueError, match="nlist must be a positive"):
        create_index("ivf_flat", 12, "l2", nlist=0)
    # Without CUDA the absent device is reported first; with it, the missing GPU version.
    with pytest.raises(ValueError, match="no GPU version of 'hnsw'|no usable CUDA device"):
        create_index("hnsw", 12, "l2", device="cuda")


@pytest.mark.skipif(faiss.get_num_gpus() > 0, reason="FAISS sees a GPU here")
def test_cuda_without_faiss_gpu_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="GPU support.*use device='cpu'|no usable CUDA device"):
        create_index("flat", 12, "l2", device="cuda")


@pytest.mark.gpu
@pytest.mark.skipif(faiss.get_num_gpus() == 0, reason="needs FAISS with a GPU")
@pytest.mark.parametrize("kind", ["flat", "ivf_flat"])
def test_gpu_matches_cpu(small: tuple[np.ndarray, np.ndarray], kind: str) -> None:
    queries, gallery = small
    params = {"nlist": 4, "nprobe": 4} if kind == "ivf_flat" else {}
    results = []
    for device in ("cpu", "cuda"):
        index = create_index(kind, 12, "l2", device=device, **params)
        index.add(gallery)
        results.append(index.search(queries, 5))
    np.testing.assert_allclose(results[0].scores, results[1].scores, rtol=1e-4, atol=1e-4)
