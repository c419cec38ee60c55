"""write_submission: the file a naive full ranking predicts, with the index's stored threshold."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from progress_recorder import recorder

from lookalike.embed.store import EmbeddingSet
from lookalike.pipeline.indexing import build_index
from lookalike.pipeline.submission import submission_search_depth, write_submission


def _clusters() -> tuple[EmbeddingSet, EmbeddingSet]:
    """10 classes of 4 gallery images each (unit rows), 2 queries per class."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(10, 16))
    normalise = lambda x: (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    gallery = normalise(np.concatenate([c + 0.6 * rng.normal(size=(4, 16)) for c in centres]))
    queries = normalise(np.concatenate([c + 0.6 * rng.normal(size=(2, 16)) for c in centres]))
    g_ids, q_ids = [f"g{i}" for i in range(40)], [f"q{i}" for i in range(20)]
    info = {"fingerprint": "cafe"}
    return (
        EmbeddingSet(queries, q_ids, [f"/q/{i}.jpg" for i in q_ids], [None] * 20, info),
        EmbeddingSet(gallery, g_ids, [f"/g/{i}.jpg" for i in g_ids], [f"c{i // 4}" for i in range(40)], info),
    )


def _naive(query: EmbeddingSet, gallery: EmbeddingSet, items: list[str], k: int,
           threshold: float | None, token: str = "no_match") -> list[list[str]]:
    """Rank every gallery row, keep first occurrences, put the token before the first worse score."""
    rows = []
    for q in range(len(query)):
        scores = gallery.embeddings @ query.embeddings[q]
        kept: list[tuple[str, float]] = []
        for g in np.argsort(-scores, kind="stable"):
            if items[g] not in [item for item, _ in kept]:
                kept.append((items[g], float(scores[g])))
        names = [item for item, _ in kept]
        if threshold is not None:
            position = next((i for i, (_, s) in enumerate(kept) if s < threshold), len(kept))
            names.insert(position, token)
        rows.append(names[:k])
    return rows


@pytest.fixture
def index(tmp_path: Path) -> tuple[EmbeddingSet, EmbeddingSet, Path]:
    query, gallery = _clusters()
    query.save(tmp_path / "q")
    build_index(gallery, tmp_path / "index", threshold=0.4)
    return query, gallery, tmp_path / "index"


def test_kaggle_csv_of_labels_uses_the_stored_threshold(index, tmp_path: Path) -> None:
    query, gallery, folder = index
    steps: list[tuple[str, int, list[int]]] = []
    outcome = write_submission(folder, tmp_path / "q", tmp_path / "sub.csv", k=3, progress=recorder(steps))
    table = pd.read_csv(outcome.path, keep_default_na=False)
    assert table["Id"].tolist() == query.ids
    expected = _naive(query, gallery, [str(label) for label in gallery.labels], 3, 0.4)
    assert [row.split() for row in table["Predicted"]] == expected
    assert any("no_match" in row for row in expected) and any("no_match" not in row for row in expected)
    assert (outcome.threshold, outcome.queries, outcome.file_format) == (pytest.approx(0.4), 20, ".csv")
    assert steps == [("searching", 20, [20])]


def test_ids_columns_token_and_threshold_override(index, tmp_path: Path) -> None:
    query, gallery, folder = index
    outcome = write_submission(folder, query, tmp_path / "sub.CSV", k=4, predict="ids", threshold=0.7,
                               no_match_token="new_whale", query_column="Image", prediction_column="Id")
    table = pd.read_csv(outcome.path)
    assert table.columns.tolist() == ["Image", "Id"]
    assert [row.split() for row in table["Id"]] == _naive(query, gallery, gallery.ids, 4, 0.7, "new_whale")


def test_json_lists_gallery_file_names(index, tmp_path: Path) -> None:
    query, gallery, folder = index
    outcome = write_submission(folder, query, tmp_path / "sub.json", k=5, threshold=None)
    names = [Path(path).name for path in gallery.paths]
    expected = _naive(query, gallery, names, 5, 0.4)
    submitted = json.loads(outcome.path.read_text())
    assert submitted == {Path(p).name: row for p, row in zip(query.paths, expected, strict=True)}


@pytest.mark.parametrize(
    "output,kwargs,message",
    [
        ("sub.txt", {}, r"cannot tell the format of .*sub\.txt"),
        ("sub.csv", {"k": 0}, r"k must be at least 1, got 0\b"),
        ("sub.csv", {"k": -5}, r"k must be at least 1, got -5\b"),
        ("sub.csv", {"predict": "classes"}, "unknown predict 'classes'"),
    ],
)
def test_bad_arguments_fail_before_anything_is_read(tmp_path: Path, output: str, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        write_submission(tmp_path / "no_index", tmp_path / "no_queries", tmp_path / output, **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_queries_of_another_model_are_refused(index, tmp_path: Path) -> None:
    query, _, folder = index
    query.info["fingerprint"] = "beef"
    with pytest.raises(ValueError, match="fingerprint"):
        write_submission(folder, query, tmp_path / "sub.csv")


def test_search_depth_rule() -> None:
    assert submission_search_depth(5, ".csv", "labels") == 15
    assert submission_search_depth(5, ".csv", "ids") == 5
    assert submission_search_depth(5, ".json", "labels") == 5
