from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from lookalike.index.result import SearchResult
from lookalike.report.submission import (
    NO_MATCH_TOKEN,
    insert_no_match,
    read_competition_json,
    read_kaggle_csv,
    write_competition_json,
    write_kaggle_csv,
)

GALLERY_SIZE = 20
QUERIES = 7
DEPTH = 12


def naive_row(
    scores: np.ndarray,
    indices: np.ndarray,
    items: list[str],
    k: int,
    threshold: float | None,
    higher_is_better: bool,
    token: str,
) -> list[str]:
    """Walk down one ranked row: emit the token at the first worse score, then new items only."""
    out: list[str] = []
    placed = threshold is None
    for score, index in zip(scores, indices):
        if index < 0:
            continue
        if not placed and (score < threshold if higher_is_better else score > threshold):
            placed = True
            if token not in out:
                out.append(token)
        if len(out) == k:
            break
        if items[index] not in out:
            out.append(items[index])
        if len(out) == k:
            break
    if not placed and len(out) < k and token not in out:
        out.append(token)
    return out


def make_result(higher_is_better: bool, seed: int = 0) -> SearchResult:
    """Random ranked rows, best first in the metric's sense; row 0 is padded with three -1."""
    rng = np.random.default_rng(seed)
    scores = np.sort(rng.random((QUERIES, DEPTH)), axis=1)
    if higher_is_better:
        scores = scores[:, ::-1]
    indices = np.stack([rng.permutation(GALLERY_SIZE)[:DEPTH] for _ in range(QUERIES)])
    indices[0, -3:] = -1
    scores[0, -3:] = -np.inf if higher_is_better else np.inf
    return SearchResult(scores.copy(), indices, higher_is_better)


GALLERY_IDS = [f"g{i:02d}" for i in range(GALLERY_SIZE)]
GALLERY_LABELS = [f"c{i % 8}" for i in range(GALLERY_SIZE)]
QUERY_IDS = [f"q{i}" for i in range(QUERIES)]


@pytest.mark.parametrize(
    ("scores", "threshold", "higher_is_better", "expected"),
    [
        ([0.9, 0.7, 0.5, 0.3], 0.6, True, ["a", "b", "T", "c", "d"]),
        ([0.9, 0.6, 0.5], 0.6, True, ["a", "b", "T", "c"]),  # equal to the threshold: accepted
        ([0.1, 0.4, 0.8], 0.5, False, ["a", "b", "T", "c"]),
        ([0.1, 0.5, 0.8], 0.5, False, ["a", "b", "T", "c"]),
        ([0.9, 0.8], 0.1, True, ["a", "b", "T"]),  # nothing worse: the token goes last
        ([0.9, 0.8], 0.95, True, ["T", "a", "b"]),
        ([0.9, 0.8], 0.05, False, ["T", "a", "b"]),
        ([], 0.5, True, ["T"]),
    ],
)
def test_insert_no_match_places_token_at_first_worse_score(
    scores: list[float], threshold: float, higher_is_better: bool, expected: list[str]
) -> None:
    items = ["a", "b", "c", "d"][: len(scores)]
    assert insert_no_match(scores, items, threshold, higher_is_better, "T") == expected


def test_insert_no_match_rejects_mismatched_row() -> None:
    with pytest.raises(ValueError, match="2 scores but 1 items"):
        insert_no_match([0.1, 0.2], ["a"], 0.5, True, "T")


@pytest.mark.parametrize("higher_is_better", [True, False])
@pytest.mark.parametrize("predict", ["labels", "ids"])
@pytest.mark.parametrize("use_threshold", [False, True])
def test_kaggle_csv_round_trip_matches_naive_loop(
    tmp_path: Path, higher_is_better: bool, predict: str, use_threshold: bool
) -> None:
    result = make_result(higher_is_better)
    threshold = float(np.median(result.scores[:, 3])) if use_threshold else None
    items = GALLERY_LABELS if predict == "labels" else GALLERY_IDS
    expected = {
        query: naive_row(s, i, items, 5, threshold, higher_is_better, NO_MATCH_TOKEN)
        for query, s, i in zip(QUERY_IDS, result.scores, result.indices)
    }
    path = write_kaggle_csv(
        tmp_path / "submission.csv",
        result,
        QUERY_IDS,
        GALLERY_IDS,
        GALLERY_LABELS,
        predict=predict,
        rejection_threshold=threshold,
    )
    assert read_kaggle_csv(path) == expected
    assert list(read_kaggle_csv(path)) == QUERY_IDS
    assert [p.name for p in tmp_path.iterdir()] == ["submission.csv"]
    if use_threshold:
        # The median threshold must actually move the token into some rows, and not all.
        placed = [NO_MATCH_TOKEN in row for row in expected.values()]
        assert any(placed) and not all(placed)


def test_labels_are_deduplicated_in_rank_order(tmp_path: Path) -> None:
    labels = ["a", "a", "b", "a", "c", "b", "d", "e", "f"]
    result = SearchResult(
        np.linspace(0.9, 0.1, 9)[None, :], np.arange(9)[None, :], higher_is_better=True
    )
    ids = [f"g{i}" for i in range(9)]
    write_kaggle_csv(tmp_path / "s.csv", result, ["q"], ids, labels, k=5)
    assert read_kaggle_csv(tmp_path / "s.csv") == {"q": ["a", "b", "c", "d", "e"]}
    write_kaggle_csv(tmp_path / "s.csv", result, ["q"], ids, labels, k=3, rejection_threshold=0.65)
    # "a" (0.9, 0.8) and "b" (0.7) pass; the repeated "a" at 0.6 emits nothing, so the token
    # lands before "c" (0.5).
    assert read_kaggle_csv(tmp_path / "s.csv") == {"q": ["a", "b", NO_MATCH_TOKEN]}


def test_distance_threshold_places_token_after_close_neighbours(tmp_path: Path) -> None:
    result = SearchResult(
        np.array([[0.1, 0.2, 0.9, 1.0], [0.8, 0.9, 1.0, 1.1]]),
        np.array([[0, 1, 2, 3], [3, 2, 1, 0]]),
        higher_is_better=False,
    )
    write_kaggle_csv(
        tmp_path / "s.csv", result, ["q0", "q1"], ["g0", "g1", "g2", "g3"], ["w", "x", "y", "z"],
        k=3, rejection_threshold=0.5, no_match_token="new_whale",
    )
    assert read_kaggle_csv(tmp_path / "s.csv") == {
        "q0": ["w", "x", "new_whale"],
        "q1": ["new_whale", "z", "y"],
    }


def test_gallery_label_spelled_like_token_is_not_repeated(tmp_path: Path) -> None:
    result = SearchResult(np.array([[0.9, 0.8, 0.2]]), np.array([[0, 1, 2]]))
    write_kaggle_csv(
        tmp_path / "s.csv", result, ["q"], ["g0", "g1", "g2"], ["new_whale", "x", "y"],
        rejection_threshold=0.5, no_match_token="new_whale",
    )
    assert read_kaggle_csv(tmp_path / "s.csv") == {"q": ["new_whale", "x", "y"]}


def test_custom_columns_and_header(tmp_path: Path) -> None:
    result = make_result(True)
    path = tmp_path / "s.csv"
    write_kaggle_csv(
        path, result, QUERY_IDS, GALLERY_IDS, predict="ids", k=2,
        query_column="image", prediction_column="landmarks",
    )
    assert path.read_text().splitlines()[0] == "image,landmarks"
    table = read_kaggle_csv(path, query_column="image", prediction_column="landmarks")
    assert table["q1"] == [GALLERY_IDS[i] for i in result.indices[1, :2]]
    with pytest.raises(ValueError, match="lacks column"):
        read_kaggle_csv(path)


def test_shallow_result_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    result = SearchResult(np.array([[0.9, 0.8]]), np.array([[0, 1]]))
    with caplog.at_level(logging.WARNING, logger="lookalike.report.submission"):
        write_kaggle_csv(tmp_path / "s.csv", result, ["q"], ["g0", "g1"], ["a", "a"])
    assert "search deeper" in caplog.text
    assert read_kaggle_csv(tmp_path / "s.csv") == {"q": ["a"]}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"gallery_labels": None}, "needs gallery_labels"),
        ({"predict": "classes"}, "valid: labels, ids"),
        ({"gallery_labels": ["a b"] + GALLERY_LABELS[1:]}, "whitespace"),
        ({"gallery_labels": [None] + GALLERY_LABELS[1:]}, "labels are None"),
        ({"gallery_labels": GALLERY_LABELS[:3]}, "3 gallery labels"),
        ({"query_ids": ["q0"] * QUERIES}, "'q0' appears more than once"),
        ({"query_ids": QUERY_IDS[:2]}, "2 query ids"),
        ({"gallery_ids": GALLERY_IDS[:5], "predict": "ids"}, "the gallery has 5 items"),
        ({"k": 0}, "k must be at least 1"),
    ],
)
def test_kaggle_csv_bad_input(tmp_path: Path, kwargs: dict, message: str) -> None:
    arguments = {
        "query_ids": QUERY_IDS,
        "gallery_ids": GALLERY_IDS,
        "gallery_labels": GALLERY_LABELS,
    } | kwargs
    with pytest.raises(ValueError, match=message):
        write_kaggle_csv(tmp_path / "s.csv", make_result(True), **arguments)
    assert not (tmp_path / "s.csv").exists()


def test_read_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="missing.csv"):
        read_kaggle_csv(tmp_path / "missing.csv")


@pytest.mark.parametrize("use_threshold", [False, True])
def test_competition_json_uses_basenames(tmp_path: Path, use_threshold: bool) -> None:
    result = make_result(False, seed=1)
    threshold = float(np.median(result.scores[:, :2])) if use_threshold else None
    query_paths = [Path("/data/query") / f"{q}.jpg" for q in QUERY_IDS]
    gallery_paths = [Path("/data/gallery") / f"sub{i % 3}" / f"{g}.jpg" for i, g in
                     enumerate(GALLERY_IDS)]
    names = [f"{g}.jpg" for g in GALLERY_IDS]
    expected = {
        f"{q}.jpg": naive_row(s, i, names, 4, threshold, False, NO_MATCH_TOKEN)
        for q, s, i in zip(QUERY_IDS, result.scores, result.indices)
    }
    path = write_competition_json(
        tmp_path / "s.json", result, query_paths, gallery_paths, k=4,
        rejection_threshold=threshold,
    )
    assert json.loads(path.read_text()) == expected
    assert read_competition_json(path) == expected


def test_competition_json_ids_and_full_depth(tmp_path: Path) -> None:
    result = make_result(True, seed=2)
    ids = [f"folder/{g}" for g in GALLERY_IDS]
    path = write_competition_json(tmp_path / "s.json", result, QUERY_IDS, ids, names="id")
    table = read_competition_json(path)
    for query, s, i in zip(QUERY_IDS, result.scores, result.indices):
        assert table[query] == naive_row(s, i, ids, DEPTH, None, True, NO_MATCH_TOKEN)
    assert len(table["q1"]) == DEPTH


def test_competition_json_rejects_colliding_basenames(tmp_path: Path) -> None:
    result = SearchResult(np.array([[0.9, 0.8]]), np.array([[0, 1]]))
    with pytest.raises(ValueError, match="'x.jpg' appears more than once"):
        write_competition_json(tmp_path / "s.json", result, ["q.jpg"], ["a/x.jpg", "b/x.jpg"])
    with pytest.raises(ValueError, match="valid: basename, id"):
        write_competition_json(tmp_path / "s.json", result, ["q"], ["a", "b"], names="path")
