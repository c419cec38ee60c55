"""Saving and loading index folders."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lookalike.index import create_index, load_index, save_index

PARAMS = {
    "exact_torch": {"chunk_size": 5},
    "flat": {},
    "ivf_flat": {"nlist": 4, "nprobe": 2},
    "ivf_pq": {"nlist": 4, "m": 4, "nbits": 5, "nprobe": 3},
    "hnsw": {"M": 8, "ef_construction": 20, "ef_search": 16},
}


@pytest.fixture
def rows() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(5)
    return rng.normal(size=(200, 8)).astype(np.float32), rng.normal(size=(12, 8)).astype(np.float32)


@pytest.mark.parametrize("kind", sorted(PARAMS))
def test_round_trip_gives_the_same_results(
    tmp_path: Path, rows: tuple[np.ndarray, np.ndarray], kind: str
) -> None:
    gallery, queries = rows
    metric = "l2" if kind != "hnsw" else "l1"
    index = create_index(kind, 8, metric, **PARAMS[kind])
    index.add(gallery)
    ids = [f"img{i}" for i in range(200)]
    paths = [f"/data/img{i}.jpg" for i in range(200)]
    labels = [str(i % 7) if i % 10 else None for i in range(200)]
    save_index(index, tmp_path / "idx", ids, paths, labels, fingerprint="abc123",
               extra={"threshold": 0.25})
    assert {p.name for p in (tmp_path / "idx").iterdir()} == {
        "index.json", "records.parquet", index.state_file
    }
    loaded, metadata = load_index(tmp_path / "idx", expected_fingerprint="abc123")
    assert type(loaded) is type(index) and loaded.params == index.params
    assert loaded.metric.name == metric and loaded.ntotal == 200 and loaded.dim == 8
    before, after = index.search(queries, 5), loaded.search(queries, 5)
    np.testing.assert_array_equal(before.indices, after.indices)
    np.testing.assert_allclose(before.scores, after.scores, rtol=1e-6)
    assert metadata.ids == ids and metadata.paths == paths and metadata.labels == labels
    assert metadata.kind == kind and metadata.fingerprint == "abc123"
    assert metadata.threshold == 0.25 and metadata.ntotal == 200


def test_fingerprint_mismatch_raises(tmp_path: Path, rows: tuple[np.ndarray, np.ndarray]) -> None:
    gallery, _ = rows
    index = create_index("flat", 8)
    index.add(gallery)
    save_index(index, tmp_path, [str(i) for i in range(200)], fingerprint="aaa")
    with pytest.raises(
        ValueError,
        match="built with model fingerprint aaa but the model given has bbb; rebuild the index "
        "with `lookalike index`",
    ):
        load_index(tmp_path, expected_fingerprint="bbb")
    _, metadata = load_index(tmp_path)
    assert metadata.paths == [""] * 200 and metadata.labels == [None] * 200
    assert metadata.threshold is None


def test_missing_fingerprint_only_warns(
    tmp_path: Path, rows: tuple[np.ndarray, np.ndarray], caplog: pytest.LogCaptureFixture
) -> None:
    gallery, _ = rows
    index = create_index("exact_torch", 8)
    index.add(gallery)
    save_index(index, tmp_path, [str(i) for i in range(200)])
    loaded, _ = load_index(tmp_path, expected_fingerprint="bbb")
    assert loaded.ntotal == 200 and "stores no model fingerprint" in caplog.text


def test_bad_folders_and_arguments(tmp_path: Path, rows: tuple[np.ndarray, np.ndarray]) -> None:
    gallery, _ = rows
    with pytest.raises(FileNotFoundError, match="missing index.json"):
        load_index(tmp_path / "nowhere")
    index = create_index("flat", 8)
    index.add(gallery)
    with pytest.raises(ValueError, match="200 rows but got 3 ids"):
        save_index(index, tmp_path / "a", ["x", "y", "z"])
    with pytest.raises(TypeError):
        save_index(index, tmp_path / "b", [str(i) for i in range(200)], extra={"bad": object()})
    assert not (tmp_path / "b").exists()
    folder = save_index(index, tmp_path / "c", [str(i) for i in range(200)])
    (folder / "index.faiss").unlink()
    with pytest.raises(FileNotFoundError, match="missing index.faiss"):
        load_index(folder)


def test_inconsistent_folder_is_reported(
    tmp_path: Path, rows: tuple[np.ndarray, np.ndarray]
) -> None:
    gallery, _ = rows
    index = create_index("exact_torch", 8)
    index.add(gallery)
    folder = save_index(index, tmp_path, [str(i) for i in range(200)])
    metadata = json.loads((folder / "index.json").read_text())
    metadata["ntotal"] = 150
    (folder / "index.json").write_text(json.dumps(metadata))
    with pytest.raises(ValueError, match="inconsistent"):
        load_index(folder)
