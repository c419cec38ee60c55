"""EmbeddingSet files: exact round trip, and an interrupted save never looks complete."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lookalike.embed.store import EMBEDDINGS_FILE, INFO_FILE, RECORDS_FILE, EmbeddingSet
from lookalike.utils.folders import (
    MANIFEST_FILE,
    ArtefactError,
    read_manifest,
    verify_folder,
    write_manifest,
)


def _example() -> EmbeddingSet:
    embeddings = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
    return EmbeddingSet(
        embeddings,
        ids=["a", "b", "c", "d"],
        paths=["/x/a.jpg", "/x/b.jpg", "/x/c.jpg", "/x/d.jpg"],
        labels=["cat", None, "dog", "cat"],
        info={
            "fingerprint": "abc123",
            "skipped": [{"id": "e", "path": "/x/e.jpg", "reason": "empty"}],
        },
    )


def test_round_trip(tmp_path: Path) -> None:
    original = _example()
    original.save(tmp_path / "emb")
    loaded = EmbeddingSet.load(tmp_path / "emb")
    np.testing.assert_array_equal(loaded.embeddings, original.embeddings)
    assert loaded.embeddings.dtype == np.float32
    assert loaded.ids == original.ids and loaded.paths == original.paths
    assert loaded.labels == ["cat", None, "dog", "cat"]
    assert loaded.fingerprint == "abc123"
    assert loaded.info["skipped"] == original.info["skipped"]
    assert loaded.info["count"] == 4 and loaded.info["dim"] == 3
    assert not [p for p in (tmp_path / "emb").iterdir() if p.name.endswith(".tmp")]


def test_select_and_image_set() -> None:
    subset = _example().select([2, 0])
    assert subset.ids == ["c", "a"] and subset.labels == ["dog", "cat"]
    np.testing.assert_array_equal(subset.embeddings, _example().embeddings[[2, 0]])
    image_set = subset.to_image_set("query")
    assert image_set.name == "query"
    assert [str(p) for p in image_set.paths] == ["/x/c.jpg", "/x/a.jpg"]


def test_mismatched_lengths_are_rejected() -> None:
    with pytest.raises(ValueError, match="4 embeddings but 3 ids"):
        EmbeddingSet(np.zeros((4, 2)), ["a", "b", "c"], ["p"] * 4, [None] * 4)
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        EmbeddingSet(np.zeros(4), ["a"] * 4, ["p"] * 4, [None] * 4)


def test_interrupted_save_leaves_no_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", fail)
    with pytest.raises(OSError, match="disk full"):
        _example().save(tmp_path / "emb")
    assert list(tmp_path.iterdir()) == []  # neither the folder nor its partial build


def test_a_failed_resave_keeps_the_old_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _example().save(tmp_path / "emb")

    def fail(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", fail)
    changed = _example()
    changed.embeddings[0] = 7.0
    with pytest.raises(OSError):
        changed.save(tmp_path / "emb")
    np.testing.assert_array_equal(
        EmbeddingSet.load(tmp_path / "emb").embeddings, _example().embeddings
    )


def test_manifest_lists_the_files_with_the_fingerprint(tmp_path: Path) -> None:
    _example().save(tmp_path / "emb")
    manifest = verify_folder(tmp_path / "emb", "embeddings")
    assert sorted(manifest.files) == [EMBEDDINGS_FILE, INFO_FILE, RECORDS_FILE]
    assert manifest.fingerprint == "abc123" and manifest.extra == {"count": 4, "dim": 3}


def test_a_folder_without_manifest_is_refused(tmp_path: Path) -> None:
    _example().save(tmp_path / "emb")
    (tmp_path / "emb" / MANIFEST_FILE).unlink()  # as a folder from before manifests
    with pytest.raises(ArtefactError, match="manifest.json is missing.*rerun"):
        EmbeddingSet.load(tmp_path / "emb")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_rows_are_refused_naming_file_and_row(tmp_path: Path, bad: float) -> None:
    example = _example()
    example.embeddings[2, 1] = bad
    example.save(tmp_path / "emb")
    with pytest.raises(ArtefactError, match=r"emb/embeddings.npy: row 2 holds NaN or infinite"):
        EmbeddingSet.load(tmp_path / "emb")


def _rewrite(folder: Path, name: str, data: bytes) -> None:
    """Edit one file and its manifest together, as a determined hand would."""
    (folder / name).write_bytes(data)
    manifest = read_manifest(folder)
    write_manifest(folder, manifest.kind, manifest.fingerprint, manifest.extra)


@pytest.mark.parametrize(
    ("name", "data", "needle"),
    [
        (EMBEDDINGS_FILE, b"\x93NUMPY garbage", "embeddings.npy cannot be read"),
        (EMBEDDINGS_FILE, b"", "embeddings.npy cannot be read"),
        (RECORDS_FILE, b"PAR1 not parquet PAR1", "records.parquet cannot be read"),
        (INFO_FILE, b"{not json", "info.json cannot be read"),
        (INFO_FILE, b"[1, 2]", "info.json holds list, not a JSON object"),
        (INFO_FILE, b'{"count": 5, "dim": 3}', "info.json describes 5 rows"),
    ],
)
def test_files_edited_with_their_manifest_fail_in_one_line(
    tmp_path: Path, name: str, data: bytes, needle: str
) -> None:
    _example().save(tmp_path / "emb")
    _rewrite(tmp_path / "emb", name, data)
    with pytest.raises(ArtefactError, match=needle) as caught:
        EmbeddingSet.load(tmp_path / "emb")
    assert "\n" not in str(caught.value) and str(tmp_path / "emb") in str(caught.value)


def test_wrong_shapes_and_dtypes_are_refused(tmp_path: Path) -> None:
    _example().save(tmp_path / "emb")
    buffer = io.BytesIO()
    np.save(buffer, np.zeros((4, 3), dtype=np.float64))
    _rewrite(tmp_path / "emb", EMBEDDINGS_FILE, buffer.getvalue())
    with pytest.raises(ArtefactError, match="float64 array of shape"):
        EmbeddingSet.load(tmp_path / "emb")
    buffer = io.BytesIO()
    np.save(buffer, np.zeros((5, 3), dtype=np.float32))
    _rewrite(tmp_path / "emb", EMBEDDINGS_FILE, buffer.getvalue())
    with pytest.raises(ArtefactError, match=r"embeddings.npy describes 5 rows"):
        EmbeddingSet.load(tmp_path / "emb")


def test_saving_over_another_kind_of_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "thesis.tex").write_text("years of work")
    with pytest.raises(ArtefactError, match="not a lookalike embeddings folder"):
        _example().save(tmp_path / "docs")
    assert (tmp_path / "docs" / "thesis.tex").read_text() == "years of work"


def test_loading_a_missing_folder_names_it(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nowhere"):
        EmbeddingSet.load(tmp_path / "nowhere")
