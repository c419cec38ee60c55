"""IVF-PQ with ``refine``: IVF-PQ candidates re-ranked by a finer copy (FAISS ``IndexRefine``)."""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np
import pytest

from lookalike.index import create_index, load_index, save_index
from lookalike.index.exact import exact_search

BASE = {"nlist": 16, "m": 8, "nbits": 6, "nprobe": 4}


def clustered(rng: np.random.Generator, n: int, centres: np.ndarray) -> np.ndarray:
    rows = centres[rng.integers(0, len(centres), n)] + 0.6 * rng.normal(size=(n, centres.shape[1]))
    return rows.astype(np.float32)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(5)
    centres = rng.normal(size=(40, 32))
    return clustered(rng, 3000, centres), clustered(rng, 100, centres)


def recall_at_10(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, truth, strict=True)]))


def built(gallery: np.ndarray, **params: object) -> object:
    index = create_index("ivf_pq", 32, "cosine", **BASE, **params)
    index.train(gallery)
    index.add(gallery)
    return index


def test_refine_raises_recall_towards_exact(data: tuple[np.ndarray, np.ndarray]) -> None:
    gallery, queries = data
    truth = exact_search(queries, gallery, 10, "cosine").indices
    plain = recall_at_10(built(gallery).search(queries, 10).indices, truth)
    flat = built(gallery, refine="flat", k_factor=32)
    sq8 = built(gallery, refine="sq8", k_factor=32)
    refined = recall_at_10(flat.search(queries, 10).indices, truth)
    quantised = recall_at_10(sq8.search(queries, 10).indices, truth)
    assert refined >= plain and refined >= 0.97, (plain, refined)
    assert quantised >= plain, (plain, quantised)
    assert isinstance(faiss.downcast_index(sq8.faiss_index), faiss.IndexRefine)
    assert faiss.extract_index_ivf(sq8.faiss_index).nprobe == BASE["nprobe"]
    assert faiss.downcast_index(sq8.faiss_index).k_factor == 32
    # k_factor is a search-time setting
    flat.k_factor = 1
    assert recall_at_10(flat.search(queries, 10).indices, truth) < refined


@pytest.mark.parametrize("refine", ["sq8", "flat"])
@pytest.mark.parametrize("mmap", [False, True])
def test_refine_round_trips_through_save_and_load(
    tmp_path: Path, data: tuple[np.ndarray, np.ndarray], refine: str, mmap: bool
) -> None:
    gallery, queries = data
    index = built(gallery, refine=refine, k_factor=8, mmap=mmap)
    expected = {**BASE, **({"mmap": True} if mmap else {}), "refine": refine, "k_factor": 8}
    assert index.params == expected
    save_index(index, tmp_path / "refined", [f"g{i}" for i in range(len(gallery))])
    loaded, metadata = load_index(tmp_path / "refined")
    assert metadata.params == expected and loaded.params == expected
    ivf = faiss.extract_index_ivf(loaded.faiss_index)
    lists = faiss.downcast_InvertedLists(ivf.invlists)
    assert isinstance(lists, faiss.OnDiskInvertedLists if mmap else faiss.ArrayInvertedLists)
    before, after = index.search(queries, 10), loaded.search(queries, 10)
    np.testing.assert_array_equal(after.indices, before.indices)
    np.testing.assert_array_equal(after.scores, before.scores)
    assert faiss.downcast_index(loaded.faiss_index).k_factor == 8


def test_refine_options_are_validated() -> None:
    with pytest.raises(ValueError, match=r"refine must be one of flat, sq8 or none, got 'pq'"):
        create_index("ivf_pq", 32, "cosine", refine="pq", **BASE)
    with pytest.raises(ValueError, match="k_factor must be a positive integer, got 0"):
        create_index("ivf_pq", 32, "cosine", refine="sq8", k_factor=0, **BASE)
    with pytest.raises(ValueError, match="CPU only"):
        create_index("ivf_pq", 32, "cosine", device="cuda", refine="sq8", **BASE)
    plain = create_index("ivf_pq", 32, "cosine", **BASE)
    assert plain.params == BASE and plain.factory_string() == "IVF16,PQ8x6"
