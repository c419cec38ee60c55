"""Review of the competition writers against a naive walk down each ranked row.

The reference, written here and nowhere else: walk a query's neighbours best first, skip
padding (``-1``, wherever it sits) and any item already seen, put the "no match" token once
before the first new item whose score is worse than the threshold (below it for similarities,
above it for distances, NaN always worse; the token goes last when none is), drop the token or
an item spelled like an earlier entry, stop at k. Files must list every query once, in the
result's order, and be replaced whole.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from lookalike.index.result import SearchResult
from lookalike.report.submission import (
    predictions,
    read_competition_json,
    read_kaggle_csv,
    write_competition_json,
    write_kaggle_csv,
)
from lookalike.utils import atomic

TOKEN = "new_whale"


def naive(
    result: SearchResult, items: list[str], k: int, threshold: float | None
) -> list[list[str]]:
    level = None if threshold is None else float(np.float32(threshold))
    rows = []
    for scores, indices in zip(result.scores.tolist(), result.indices.tolist()):
        out: list[str] = []
        seen: set[str] = set()
        placed = level is None
        for score, index in zip(scores, indices):
            if index < 0 or items[index] in seen:
                continue
            seen.add(items[index])
            if not placed and (
                math.isnan(score) or (score < level if result.higher_is_better else score > level)
            ):
                placed = True
                if TOKEN not in out:
                    out.append(TOKEN)
            if items[index] not in out:
                out.append(items[index])
        if not placed and TOKEN not in out:
            out.append(TOKEN)
        rows.append(out[:k])
    return rows


def fuzzed(seed: int, higher_is_better: bool, queries: int = 11, depth: int = 9,
           gallery: int = 13) -> SearchResult:
    """Best-first rows with -1 padding anywhere, a NaN score, and ties."""
    rng = np.random.default_rng(seed)
    scores = np.sort(rng.choice(np.linspace(0, 1, 12), (queries, depth)), axis=1)
    if higher_is_better:
        scores = scores[:, ::-1].copy()
    indices = np.stack([rng.permutation(gallery)[:depth] for _ in range(queries)])
    holes = rng.random((queries, depth)) < 0.2
    indices[holes] = -1
    scores[holes] = -np.inf if higher_is_better else np.inf
    scores[1, -1] = np.nan  # a neighbour whose score could not be computed
    indices[1, -1] = max(indices[1, -1], 0)
    return SearchResult(scores.astype(np.float32), indices, higher_is_better)


GALLERY_IDS = [f"g{i:02d}" for i in range(13)]
GALLERY_LABELS = [f"c{i % 5}" for i in range(12)] + [TOKEN]  # one label spelled like the token


@pytest.mark.parametrize("higher_is_better", [True, False], ids=["similarity", "distance"])
@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("k", [1, 4, 30])  # 30: more than the gallery holds
@pytest.mark.parametrize("predict", ["labels", "ids"])
@pytest.mark.parametrize("with_threshold", [False, True])
def test_kaggle_csv_is_the_naive_walk(
    tmp_path: Path, higher_is_better: bool, seed: int, k: int, predict: str,
    with_threshold: bool,
) -> None:
    result = fuzzed(seed, higher_is_better)
    queries = [f"q{i}" for i in range(len(result))][::-1]  # not sorted: order must be kept
    threshold = float(np.nanmedian(result.scores[result.indices >= 0])) if with_threshold else None
    items = GALLERY_LABELS if predict == "labels" else GALLERY_IDS
    path = write_kaggle_csv(tmp_path / "s.csv", result, queries, GALLERY_IDS, GALLERY_LABELS,
                            predict=predict, k=k, rejection_threshold=threshold,
                            no_match_token=TOKEN)
    table = read_kaggle_csv(path)
    assert list(table) == queries
    assert list(table.values()) == naive(result, items, k, threshold)
    for row in table.values():
        assert len(row) == len(set(row)) <= k
    lines = path.read_text().splitlines()
    assert len(lines) == len(queries) + 1 and lines[0] == "Id,Predicted"


@pytest.mark.parametrize("higher_is_better", [True, False], ids=["similarity", "distance"])
@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("names", ["basename", "relpath", "id"])
@pytest.mark.parametrize("with_threshold", [False, True])
def test_competition_json_is_the_naive_walk(
    tmp_path: Path, higher_is_better: bool, seed: int, names: str, with_threshold: bool
) -> None:
    result = fuzzed(seed, higher_is_better)
    query_paths = [f"/data/test/{i % 3}/q{i}.jpg" for i in range(len(result))][::-1]
    gallery_paths = [f"/data/train/{i % 4}/g{i}.jpg" for i in range(13)]
    threshold = float(np.nanmedian(result.scores[result.indices >= 0])) if with_threshold else None
    keys = {
        "basename": ([p.rsplit("/", 1)[1] for p in query_paths],
                     [p.rsplit("/", 1)[1] for p in gallery_paths]),
        "relpath": ([p.removeprefix("/data/test/") for p in query_paths],
                    [p.removeprefix("/data/train/") for p in gallery_paths]),
        "id": (query_paths, gallery_paths),
    }[names]
    path = write_competition_json(
        tmp_path / "s.json", result, query_paths, gallery_paths,
        names=names,  # type: ignore[arg-type]
        k=5, rejection_threshold=threshold, no_match_token=TOKEN,
    )
    table = json.loads(path.read_text())
    assert list(table) == keys[0]
    assert list(table.values()) == naive(result, keys[1], 5, threshold)
    assert read_competition_json(path) == table


def test_every_row_holds_k_entries_when_the_gallery_allows() -> None:
    """Distances, a threshold between ranks: k entries, token counted, best (smallest) first."""
    result = SearchResult(
        np.array([[0.1, 0.2, 0.3, 0.4, 0.5, 0.6], [0.7, 0.8, 0.9, 1.0, 1.1, 1.2]]),
        np.array([[5, 4, 3, 2, 1, 0], [0, 1, 2, 3, 4, 5]]),
        higher_is_better=False,
    )
    names = [f"g{i}.jpg" for i in range(6)]
    rows = predictions(result, names, k=4, rejection_threshold=0.35, no_match_token=TOKEN)
    assert rows == [["g5.jpg", "g4.jpg", "g3.jpg", TOKEN], [TOKEN, "g0.jpg", "g1.jpg", "g2.jpg"]]
    # a gallery of 2 under k=4: every neighbour plus the token, nothing invented
    small = SearchResult(np.array([[0.9, 0.8, -np.inf, -np.inf]]), np.array([[1, 0, -1, -1]]))
    assert predictions(small, ["a", "b"], k=4, rejection_threshold=0.5,
                       no_match_token=TOKEN) == [["b", "a", TOKEN]]
    assert predictions(small, ["a", "b"], k=4) == [["b", "a"]]


@pytest.mark.parametrize("role", ["query", "gallery"])
def test_a_repeated_basename_is_one_line_naming_both_files(tmp_path: Path, role: str) -> None:
    result = SearchResult(np.array([[0.9, 0.8], [0.7, 0.6]]), np.array([[0, 1], [1, 0]]))
    clash = ["/x/a/img.jpg", "/x/b/img.jpg"]
    plain = ["/y/one.jpg", "/y/two.jpg"]
    queries, gallery = (clash, plain) if role == "query" else (plain, clash)
    with pytest.raises(ValueError) as error:
        write_competition_json(tmp_path / "s.json", result, queries, gallery)
    message = str(error.value)
    assert "\n" not in message
    assert f"{role} name 'img.jpg'" in message
    assert "/x/a/img.jpg" in message and "/x/b/img.jpg" in message and "relpath" in message
    assert not (tmp_path / "s.json").exists()
    # relpath tells them apart
    write_competition_json(tmp_path / "s.json", result, queries, gallery, names="relpath")
    keys = list(read_competition_json(tmp_path / "s.json"))
    assert keys == (["a/img.jpg", "b/img.jpg"] if role == "query" else ["one.jpg", "two.jpg"])


@pytest.mark.parametrize("suffix", [".csv", ".json"])
def test_a_kill_during_the_write_leaves_the_old_file_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, suffix: str
) -> None:
    result = SearchResult(np.array([[0.9, 0.8], [0.7, 0.6]]), np.array([[0, 1], [1, 0]]))
    path = tmp_path / f"s{suffix}"

    def write(queries: list[str]) -> None:
        if suffix == ".csv":
            write_kaggle_csv(path, result, queries, ["a", "b"], predict="ids", k=2)
        else:
            write_competition_json(path, result, queries, ["a", "b"], names="id", k=2)

    write(["q0", "q1"])
    before = path.read_bytes()

    def killed(*args: object) -> None:
        raise KeyboardInterrupt  # stands for a kill between writing and renaming

    monkeypatch.setattr(atomic.os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        write(["n0", "n1"])
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [path.name]
    monkeypatch.undo()
    # a rerun with other queries replaces the file: nothing of the old one is left in it
    write(["n0", "n1"])
    table = read_kaggle_csv(path) if suffix == ".csv" else read_competition_json(path)
    assert list(table) == ["n0", "n1"]
