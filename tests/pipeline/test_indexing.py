"""build_index / search_index: saved indexes answer like exact search and refuse other models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lookalike.embed.store import EmbeddingSet
from lookalike.pipeline.indexing import build_index, search_index


def _set(vectors: np.ndarray, prefix: str, fingerprint: str = "f00d") -> EmbeddingSet:
    ids = [f"{prefix}{i}" for i in range(len(vectors))]
    return EmbeddingSet(vectors, ids, [f"{i}.png" for i in ids], [str(i % 3) for i in range(len(vectors))], {"fingerprint": fingerprint})


@pytest.mark.parametrize("kind,params", [("flat", {}), ("ivf_flat", {"nlist": 4, "nprobe": 4}), ("hnsw", {"M": 16, "ef_search": 200})])
def test_saved_index_answers_like_exact_search(tmp_path: Path, kind: str, params: dict) -> None:
    rng = np.random.default_rng(0)
    gallery = rng.normal(size=(200, 8)).astype(np.float32)
    queries = rng.normal(size=(10, 8)).astype(np.float32)
    build_index(_set(gallery, "g"), tmp_path / "index", kind=kind, metric="l2", **params)
    result, path = search_index(tmp_path / "index", _set(queries, "q"), tmp_path / "r.csv", k=5)
    naive = np.argsort(((queries[:, None] - gallery[None]) ** 2).sum(-1), axis=1)[:, :5]
    assert (result.indices == naive).all()
    table = pd.read_csv(path)
    assert table["gallery_id"].tolist() == [f"g{i}" for i in naive.ravel()]


def test_threshold_stored_with_the_index_inserts_no_match(tmp_path: Path) -> None:
    gallery = np.eye(4, dtype=np.float32)
    queries = np.array([[1, 0, 0, 0], [0.6, 0.8, 0, 0]], dtype=np.float32)
    build_index(_set(gallery, "g"), tmp_path / "index", metric="cosine", extra={"threshold": 0.7})
    _, path = search_index(tmp_path / "index", _set(queries, "q"), tmp_path / "r.csv", k=2)
    table = pd.read_csv(path, keep_default_na=False)
    assert table["gallery_id"].tolist() == ["g0", "no_match", "g1", "no_match"]
    _, path = search_index(tmp_path / "index", _set(queries, "q"), tmp_path / "r2.csv", k=2, use_threshold=False)
    assert "no_match" not in path.read_text()


def test_queries_from_another_model_are_refused(tmp_path: Path) -> None:
    gallery = np.eye(4, dtype=np.float32)
    build_index(_set(gallery, "g", "aaaa"), tmp_path / "index")
    with pytest.raises(ValueError, match="fingerprint"):
        search_index(tmp_path / "index", _set(gallery, "q", "bbbb"), tmp_path / "r.csv")


def test_exclude_self_drops_the_query_itself(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    vectors = rng.normal(size=(20, 6)).astype(np.float32)
    build_index(_set(vectors, "x"), tmp_path / "index", metric="l2")
    result, _ = search_index(tmp_path / "index", _set(vectors, "x"), tmp_path / "r.csv", k=3, exclude_self=True)
    distances = ((vectors[:, None] - vectors[None]) ** 2).sum(-1)
    np.fill_diagonal(distances, np.inf)
    assert (result.indices == np.argsort(distances, axis=1)[:, :3]).all()
