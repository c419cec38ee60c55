"""Result writers: files parsed back."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lookalike.index.result import SearchResult
from lookalike.search.writers import ranked_rows, write_results


@pytest.fixture
def result() -> SearchResult:
    return SearchResult(
        np.array([[0.9, 0.5, 0.25], [0.75, -np.inf, -np.inf]], dtype=np.float32),
        np.array([[2, 0, 1], [1, -1, -1]]),
    )


def test_csv_round_trip(tmp_path: Path, result: SearchResult) -> None:
    path = write_results(result, ["qa", "qb"], ["g0", "g1", "g2"], ["/0.jpg", "/1.jpg", "/2.jpg"],
                         tmp_path / "out" / "results.csv")
    frame = pd.read_csv(path, dtype={"query_id": str, "gallery_id": str})
    assert list(frame.columns) == ["query_id", "rank", "gallery_id", "gallery_path", "score"]
    assert frame["query_id"].tolist() == ["qa", "qa", "qa", "qb"]
    assert frame["rank"].tolist() == [1, 2, 3, 1]
    assert frame["gallery_id"].tolist() == ["g2", "g0", "g1", "g1"]
    assert frame["gallery_path"].tolist() == ["/2.jpg", "/0.jpg", "/1.jpg", "/1.jpg"]
    np.testing.assert_allclose(frame["score"], [0.9, 0.5, 0.25, 0.75], rtol=1e-6)
    assert [p.name for p in path.parent.iterdir()] == ["results.csv"]


def test_json_round_trip(tmp_path: Path, result: SearchResult) -> None:
    path = write_results(result, ["qa", "qb"], ["g0", "g1", "g2"], None, tmp_path / "r.JSON")
    ranking = json.loads(path.read_text())
    assert list(ranking) == ["qa", "qb"]
    assert [entry["gallery_id"] for entry in ranking["qa"]] == ["g2", "g0", "g1"]
    assert ranking["qb"] == [{"rank": 1, "gallery_id": "g1", "gallery_path": None,
                              "score": pytest.approx(0.75)}]


def test_bad_arguments(tmp_path: Path, result: SearchResult) -> None:
    with pytest.raises(ValueError, match="unknown suffix '.txt'; valid suffixes: .csv, .json"):
        write_results(result, ["qa", "qb"], ["g0", "g1", "g2"], None, tmp_path / "r.txt")
    with pytest.raises(ValueError, match="1 query ids for a result of 2"):
        write_results(result, ["qa"], ["g0", "g1", "g2"], None, tmp_path / "r.csv")
    with pytest.raises(ValueError, match="gallery row 2 but only 2 gallery ids"):
        write_results(result, ["qa", "qb"], ["g0", "g1"], None, tmp_path / "r.csv")
    assert not (tmp_path / "r.csv").exists()


def test_threshold_inserts_no_match_at_the_first_failing_rank(tmp_path: Path) -> None:
    scores = np.array([[0.9, 0.7, 0.4], [0.3, 0.2, 0.1], [0.95, 0.9, 0.85]], dtype=np.float32)
    indices = np.array([[0, 1, 2], [2, 1, 0], [1, 0, 2]])
    result = SearchResult(scores, indices, higher_is_better=True)
    rows = ranked_rows(result, ["a", "b", "c"], ["g0", "g1", "g2"], None, threshold=0.5)
    by_query: dict[str, list[str]] = {}
    for row in rows:
        by_query.setdefault(row["query_id"], []).append(row["gallery_id"])
    # Naive rule: "no match" goes before the first score below the threshold; lists keep length k.
    assert by_query == {
        "a": ["g0", "g1", "no_match"],
        "b": ["no_match", "g2", "g1"],
        "c": ["g1", "g0", "g2"],
    }
    assert [r["rank"] for r in rows if r["query_id"] == "b"] == [1, 2, 3]
    assert all(r["score"] is None for r in rows if r["gallery_id"] == "no_match")
    path = write_results(result, ["a", "b", "c"], ["g0", "g1", "g2"], None, tmp_path / "r.csv", threshold=0.5)
    assert "b,1,no_match,," in path.read_text()


def test_distance_threshold_keeps_lower_scores(tmp_path: Path) -> None:
    result = SearchResult(np.array([[0.1, 0.6]], dtype=np.float32), np.array([[3, 4]]), higher_is_better=False)
    rows = ranked_rows(result, ["q"], [f"g{i}" for i in range(5)], None, threshold=0.5)
    assert [r["gallery_id"] for r in rows] == ["g3", "no_match"]
