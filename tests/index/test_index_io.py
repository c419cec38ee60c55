"""Saving and loading index folders."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lookalike.index import create_index, load_index, save_index, set_index_threshold
from lookalike.index.io import check_index_folder
from lookalike.utils.folders import (
    MANIFEST_FILE,
    ArtefactError,
    partial_path,
    read_manifest,
    verify_folder,
    write_manifest,
)

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
        "index.json", "records.parquet", index.state_file, "manifest.json"
    }
    manifest = verify_folder(tmp_path / "idx", "index")
    assert manifest.fingerprint == "abc123" and manifest.extra["ntotal"] == 200
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
    with pytest.raises(FileNotFoundError, match="nowhere does not exist"):
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
    with pytest.raises(ArtefactError, match="index.faiss is missing"):
        load_index(folder)
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "photo.jpg").write_bytes(b"jpeg")
    with pytest.raises(ArtefactError, match="not a lookalike index folder"):
        save_index(index, tmp_path / "d", [str(i) for i in range(200)])
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["photo.jpg"]


def test_inconsistent_folder_is_reported(
    tmp_path: Path, rows: tuple[np.ndarray, np.ndarray]
) -> None:
    gallery, _ = rows
    index = create_index("exact_torch", 8)
    index.add(gallery)
    folder = save_index(index, tmp_path, [str(i) for i in range(200)])
    metadata = json.loads((folder / "index.json").read_text())
    metadata["ntotal"] = 150
    _rewrite(folder, "index.json", json.dumps(metadata).encode())
    with pytest.raises(ValueError, match="inconsistent"):
        load_index(folder)


def _rewrite(folder: Path, name: str, data: bytes) -> None:
    """Edit one file and its manifest together, as a determined hand would."""
    (folder / name).write_bytes(data)
    manifest = read_manifest(folder)
    write_manifest(folder, manifest.kind, manifest.fingerprint, manifest.extra)


def _flat(tmp_path: Path, gallery: np.ndarray, kind: str = "flat") -> Path:
    index = create_index(kind, 8, "cosine")
    index.add(gallery)
    return save_index(index, tmp_path / "idx", [f"i{n}" for n in range(len(gallery))])


@pytest.mark.parametrize(
    ("kind", "name", "edit", "needle"),
    [
        ("flat", "index.faiss", b"", "index.faiss cannot be read"),
        ("flat", "index.faiss", b"IxF2 not faiss at all", "index.faiss cannot be read"),
        ("exact_torch", "vectors.npy", b"\x93NUMPY", "vectors.npy cannot be read"),
        ("flat", "records.parquet", b"PAR1xxxxPAR1", "records.parquet cannot be read"),
        ("flat", "index.json", b"{not json", "index.json cannot be read"),
        ("flat", "index.json", b"[]", "index.json holds list"),
        ("flat", "index.json", {"dim": 9}, "dimension 8 .* but its folder describes dimension 9"),
        ("flat", "index.json", {"dim": "8"}, "dim must be a positive integer"),
        ("flat", "index.json", {"ntotal": 7}, "200 index rows, 200 records, index.json says 7"),
        ("flat", "index.json", {"kind": "annoy"}, "unknown index kind 'annoy'"),
        ("flat", "index.json", {"params": {"nlist": 4}}, "cannot be read .flat index does not take"),
        ("flat", "index.json", {"extra": {"threshold": "NaN"}}, "threshold must be a finite"),
    ],
)
def test_files_edited_with_their_manifest_fail_in_one_line_naming_the_file(
    tmp_path: Path, rows: tuple[np.ndarray, np.ndarray], kind: str, name: str,
    edit: bytes | dict, needle: str,
) -> None:
    folder = _flat(tmp_path, rows[0], kind)
    if isinstance(edit, dict):
        metadata = json.loads((folder / "index.json").read_text())
        edit = json.dumps({**metadata, **edit}).encode()
    _rewrite(folder, name, edit)
    with pytest.raises(ValueError, match=needle) as caught:
        load_index(folder)
    assert "\n" not in str(caught.value) and str(folder) in str(caught.value)


def test_a_non_finite_exact_index_is_refused(
    tmp_path: Path, rows: tuple[np.ndarray, np.ndarray]
) -> None:
    folder = _flat(tmp_path, rows[0], "exact_torch")
    vectors = np.load(folder / "vectors.npy")
    vectors[3, 0] = np.nan
    buffer = io.BytesIO()
    np.save(buffer, vectors)
    _rewrite(folder, "vectors.npy", buffer.getvalue())
    with pytest.raises(ArtefactError, match="vectors.npy: row 3 holds NaN"):
        load_index(folder)


def test_a_folder_without_manifest_is_refused(
    tmp_path: Path, rows: tuple[np.ndarray, np.ndarray]
) -> None:
    folder = _flat(tmp_path, rows[0])
    (folder / MANIFEST_FILE).unlink()
    with pytest.raises(ArtefactError, match="manifest.json is missing.*rerun"):
        load_index(folder)
    with pytest.raises(ArtefactError, match="manifest.json is missing"):
        check_index_folder(folder)


def test_setting_the_threshold_rewrites_the_folder_whole(
    tmp_path: Path, rows: tuple[np.ndarray, np.ndarray]
) -> None:
    folder = _flat(tmp_path, rows[0])
    before = (folder / "index.faiss").read_bytes()
    set_index_threshold(folder, 0.375)
    manifest = verify_folder(folder, "index")
    assert json.loads((folder / "index.json").read_text())["extra"]["threshold"] == 0.375
    assert (folder / "index.faiss").read_bytes() == before
    assert sorted(manifest.files) == ["index.faiss", "index.json", "records.parquet"]
    assert not partial_path(folder).exists()
    _, metadata = load_index(folder)
    assert metadata.threshold == 0.375
    with pytest.raises(ValueError, match="finite"):
        set_index_threshold(folder, float("nan"))
    (folder / "records.parquet").write_bytes(b"damaged")
    with pytest.raises(ArtefactError, match="records.parquet has 7 bytes"):
        set_index_threshold(folder, 0.5)
    assert json.loads((folder / "index.json").read_text())["extra"]["threshold"] == 0.375


def test_a_rebuild_that_fails_keeps_the_old_index(
    tmp_path: Path, rows: tuple[np.ndarray, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = _flat(tmp_path, rows[0])
    bigger = create_index("flat", 8, "cosine")
    bigger.add(np.concatenate([rows[0], rows[1]]))

    def fail(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", fail)
    with pytest.raises(OSError):
        save_index(bigger, folder, [f"j{n}" for n in range(212)])
    loaded, metadata = load_index(folder)
    assert loaded.ntotal == 200 and metadata.ids[0] == "i0"
    assert not partial_path(folder).exists()
