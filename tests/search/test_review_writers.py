"""Review of the result writers against a naive walk down each ranked row: every query once and
in order, padding skipped wherever it sits, "no match" before the first neighbour that fails
the threshold (in the metric's own sense), at most k entries; a query id given twice is refused
rather than merged."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lookalike.index.result import SearchResult
from lookalike.search.writers import NO_MATCH_ID, ranked_rows, write_results


def naive_lists(
    result: SearchResult, gallery_ids: list[str], threshold: float | None
) -> list[list[tuple[str, float | None]]]:
    """Per query: its real neighbours best first, the no-match entry placed by a plain loop."""
    lists = []
    for scores, indices in zip(result.scores.tolist(), result.indices.tolist()):
        out: list[tuple[str, float | None]] = []
        placed = threshold is None
        level = None if threshold is None else float(np.float32(threshold))
        for score, row in zip(scores, indices):
            if row < 0:
                continue
            worse = (
                math.isnan(score) or (score < level if result.higher_is_better else score > level)
            ) if level is not None else False
            if not placed and worse:
                out.append((NO_MATCH_ID, None))
                placed = True
            out.append((gallery_ids[row], score))
        if not placed:
            out.append((NO_MATCH_ID, None))
        lists.append(out[: result.k])
    return lists


def random_result(higher_is_better: bool, seed: int, queries: int = 9, k: int = 6,
                  gallery: int = 15) -> SearchResult:
    """Sorted rows with -1 padding scattered anywhere in some rows (after a filter, a merge)."""
    rng = np.random.default_rng(seed)
    scores = np.sort(rng.random((queries, k)).astype(np.float32), axis=1)
    if higher_is_better:
        scores = scores[:, ::-1]
    indices = np.stack([rng.permutation(gallery)[:k] for _ in range(queries)])
    holes = rng.random((queries, k)) < 0.25
    indices[holes] = -1
    scores[holes] = -np.inf if higher_is_better else np.inf
    return SearchResult(scores.copy(), indices, higher_is_better)


@pytest.mark.parametrize("higher_is_better", [True, False])
@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("with_threshold", [False, True])
def test_rows_match_a_naive_walk_with_padding_anywhere(
    tmp_path: Path, higher_is_better: bool, seed: int, with_threshold: bool
) -> None:
    result = random_result(higher_is_better, seed)
    gallery_ids = [f"g{i}" for i in range(15)]
    query_ids = [f"q{i}" for i in range(len(result))]
    valid = result.scores[result.indices >= 0]
    threshold = float(np.median(valid)) if with_threshold else None
    expected = naive_lists(result, gallery_ids, threshold)

    rows = ranked_rows(result, query_ids, gallery_ids, None, threshold)
    got: dict[str, list[tuple[str, float | None]]] = {q: [] for q in query_ids}
    for row in rows:
        got[row["query_id"]].append((row["gallery_id"], row["score"]))
    assert list(got.values()) == expected
    # queries in order, ranks 1..n without gaps
    assert [r["query_id"] for r in rows] == sorted((r["query_id"] for r in rows),
                                                   key=query_ids.index)
    for query in query_ids:
        assert [r["rank"] for r in rows if r["query_id"] == query] == list(
            range(1, len(got[query]) + 1))

    path = write_results(result, query_ids, gallery_ids, None, tmp_path / "r.json",
                         threshold=threshold)
    table = json.loads(path.read_text())
    assert list(table) == query_ids
    assert [[(e["gallery_id"], e["score"]) for e in table[q]] for q in query_ids] == expected
    frame = pd.read_csv(write_results(result, query_ids, gallery_ids, None, tmp_path / "r.csv",
                                      threshold=threshold), dtype={"gallery_id": str})
    assert frame["gallery_id"].tolist() == [g for lst in expected for g, _ in lst]


def test_no_match_is_not_put_before_a_neighbour_that_passes() -> None:
    # padding at rank 2 is not a neighbour: it neither fails the threshold nor takes a rank
    result = SearchResult(np.array([[0.9, -np.inf, 0.8, 0.3]]), np.array([[0, -1, 1, 2]]))
    rows = ranked_rows(result, ["q"], ["a", "b", "c"], None, threshold=0.5)
    assert [r["gallery_id"] for r in rows] == ["a", "b", NO_MATCH_ID, "c"]
    distances = SearchResult(np.array([[0.1, np.inf, 0.2, 0.9]]), np.array([[0, -1, 1, 2]]),
                             higher_is_better=False)
    rows = ranked_rows(distances, ["q"], ["a", "b", "c"], None, threshold=0.5)
    assert [r["gallery_id"] for r in rows] == ["a", "b", NO_MATCH_ID, "c"]


@pytest.mark.parametrize("suffix", [".json", ".csv"])
def test_a_query_id_given_twice_is_refused_not_merged(tmp_path: Path, suffix: str) -> None:
    # JSON keyed by query id would merge two queries into one list of 2k entries
    result = SearchResult(np.array([[0.9, 0.8], [0.7, 0.6]]), np.array([[0, 1], [1, 0]]))
    path = tmp_path / f"r{suffix}"
    with pytest.raises(ValueError, match="query id 'q' appears more than once"):
        write_results(result, ["q", "q"], ["a", "b"], None, path)
    assert not path.exists()


def test_a_rewrite_replaces_the_file_whole(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    result = SearchResult(np.array([[0.9, 0.8], [0.7, 0.6]]), np.array([[0, 1], [1, 0]]))
    write_results(result, ["q0", "q1"], ["a", "b"], None, path)
    write_results(SearchResult(result.scores[:1], result.indices[:1]), ["q9"], ["a", "b"], None,
                  path)
    assert list(json.loads(path.read_text())) == ["q9"]
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]
