"""``Index.reconstruct`` and ``Index.empty_copy`` for every kind, against what was added."""

from __future__ import annotations

import numpy as np
import pytest

from lookalike.index import create_index
from lookalike.index.metrics import get_metric

DIM = 8
ROWS = 300
KINDS = [
    ("exact_torch", {}),
    ("flat", {}),
    ("hnsw", {"M": 8}),
    ("ivf_flat", {"nlist": 4}),
    ("ivf_pq", {"nlist": 4, "m": 2, "nbits": 4}),
]


def vectors(seed: int, count: int = ROWS) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(count, DIM)).astype(np.float32)


@pytest.mark.parametrize(("kind", "params"), KINDS)
@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_reconstruct_gives_the_stored_rows_back(kind: str, params: dict, metric: str) -> None:
    rows = vectors(0)
    index = create_index(kind, DIM, metric, **params)
    index.add(rows)
    stored = get_metric(metric).prepare(rows)  # normalised for cosine, as stored
    everything = index.reconstruct()
    assert everything.shape == (ROWS, DIM) and everything.dtype == np.float32
    if kind == "ivf_pq":  # quantised: close, not equal, and each row nearest its original
        error = np.linalg.norm(everything - stored, axis=1).mean()
        assert error < 0.6 * np.linalg.norm(stored, axis=1).mean()
    else:
        np.testing.assert_allclose(everything, stored, atol=1e-6)
    picked = np.array([7, 0, ROWS - 1, 7])
    np.testing.assert_array_equal(index.reconstruct(picked), everything[picked])
    index.add(rows[:2])  # rows added after the first read are found too (IVF direct map)
    np.testing.assert_array_equal(index.reconstruct([ROWS, ROWS + 1]), everything[:2])
    assert index.reconstruct([]).shape == (0, DIM)
    with pytest.raises(ValueError, match=r"rows must lie in \[0, 302\)"):
        index.reconstruct([302])


@pytest.mark.parametrize(("kind", "params"), KINDS)
def test_an_empty_copy_keeps_training_and_searches_like_a_fresh_build(
    kind: str, params: dict
) -> None:
    original = create_index(kind, DIM, "cosine", **params)
    original.add(vectors(0))
    copy = original.empty_copy()
    assert (copy.kind, copy.ntotal, copy.params, copy.metric.name) == (kind, 0, original.params,
                                                                      "cosine")  # fmt: skip
    assert copy.is_trained
    subset = vectors(1, 50)
    copy.add(subset)
    queries = vectors(2, 5)
    assert copy.search(queries, 3).indices.max() < 50
    # The copy encodes rows with the original's training (coarse centroids, PQ codebooks): a
    # row stored in the copy reads back exactly as the same row stored in the original.
    original.add(subset)
    np.testing.assert_array_equal(copy.reconstruct(), original.reconstruct(range(ROWS, ROWS + 50)))
