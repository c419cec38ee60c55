"""EmbeddingSet files: exact round trip, and an interrupted save never looks complete."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lookalike.embed.store import EMBEDDINGS_FILE, INFO_FILE, RECORDS_FILE, EmbeddingSet


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


def test_interrupted_save_leaves_an_incomplete_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", fail)
    with pytest.raises(OSError, match="disk full"):
        _example().save(tmp_path / "emb")
    names = sorted(p.name for p in (tmp_path / "emb").iterdir())
    assert names == [EMBEDDINGS_FILE]  # no temporary file left behind, no info.json
    with pytest.raises(FileNotFoundError, match=f"{RECORDS_FILE}, {INFO_FILE}"):
        EmbeddingSet.load(tmp_path / "emb")


def test_loading_a_missing_folder_names_it(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nowhere"):
        EmbeddingSet.load(tmp_path / "nowhere")
