"""The one ranking: against a naive full sort, with self-exclusion, junk, unlabelled items."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lookalike.ranking import (
    UNLABELLED_GALLERY,
    UNLABELLED_QUERY,
    Ranking,
    encode_labels,
    rank,
    relevance,
)


def _naive(queries, gallery, query_labels, gallery_labels, exclude, junk, higher_is_better):
    """Per query: a stable full sort of float64 scores, excluded rows dropped, then ranks."""
    rankings, positives = [], []
    for q, query in enumerate(queries.astype(np.float64)):
        if higher_is_better:
            scores = gallery.astype(np.float64) @ query
            order = sorted(range(len(gallery)), key=lambda g: (-scores[g], g))
        else:
            scores = np.sqrt(((gallery.astype(np.float64) - query) ** 2).sum(axis=1))
            order = sorted(range(len(gallery)), key=lambda g: (scores[g], g))
        dropped = set(junk[q]) | ({int(exclude[q])} if exclude[q] >= 0 else set())
        order = [g for g in order if g not in dropped]
        rankings.append(order)
        label = query_labels[q]
        positives.append(
            [r + 1 for r, g in enumerate(order) if label is not None and gallery_labels[g] == label]
        )
    return rankings, positives


@pytest.mark.parametrize(("metric", "higher"), [("ip", True), ("l2", False)])
@pytest.mark.parametrize("chunk", [1, 4, 100])
def test_matches_a_naive_full_sort(metric: str, higher: bool, chunk: int) -> None:
    rng = np.random.default_rng(3)
    gallery = rng.normal(size=(25, 6)).astype(np.float32)
    gallery[7] = gallery[3]  # an exact tie: the lower row ranks first
    queries = np.concatenate([gallery[:8], rng.normal(size=(4, 6)).astype(np.float32)])
    gallery_labels = [None if g % 6 == 5 else f"c{g % 4}" for g in range(25)]
    query_labels = [gallery_labels[q] if q < 8 else (None if q == 9 else "c1") for q in range(12)]
    exclude = np.array(list(range(8)) + [-1] * 4)
    junk = [[] for _ in range(12)]
    junk[2], junk[10] = [0, 4], [12]
    ranking = rank(queries, gallery, query_labels, gallery_labels, metric=metric, k=30,
                   exclude_rows=exclude, junk=junk, chunk_size=chunk)
    rankings, positives = _naive(queries, gallery, query_labels, gallery_labels, exclude, junk,
                                 higher)
    for q in range(12):
        kept = [g for g in ranking.neighbours.indices[q].tolist() if g >= 0]
        assert kept == rankings[q]
        assert ranking.positive_rank[ranking.positive_query == q].tolist() == positives[q]
        assert ranking.num_relevant[q] == len(positives[q])
        assert ranking.first_positive_rank[q] == (positives[q][0] if positives[q] else 0)
        assert (ranking.neighbours.indices[q, len(rankings[q]):] == -1).all()  # padding last
    flags = ranking.relevance(5)
    for q in range(12):
        assert flags[q].tolist() == [r in positives[q] for r in range(1, 6)]


def test_unlabelled_items_have_one_code_and_are_never_relevant() -> None:
    codes = encode_labels(["a", None, "z"], ["a", None, "b", "a"])
    assert codes.query.tolist() == [0, UNLABELLED_QUERY, 2]
    assert codes.gallery.tolist() == [0, UNLABELLED_GALLERY, 1, 0]
    assert codes.num_relevant().tolist() == [2, 0, 0]
    flags = relevance(np.array([[0, 1, 3], [1, 0, -1], [2, 1, 0]]), codes)
    assert flags.tolist() == [[True, False, True], [False, False, False], [False] * 3]
    with pytest.raises(ValueError, match=r"gallery_labels\[1\] is None"):
        encode_labels(["a"], ["a", None], allow_unlabelled=False)


def test_save_load_and_select(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(10, 3)).astype(np.float32)
    labels = [i % 3 for i in range(10)]
    ranking = rank(vectors, vectors, labels, labels, metric="l1", k=4, exclude_rows=np.arange(10))
    path = ranking.save(tmp_path / "ranking.npz")
    loaded = Ranking.load(path)
    np.testing.assert_array_equal(loaded.neighbours.indices, ranking.neighbours.indices)
    np.testing.assert_array_equal(loaded.neighbours.scores, ranking.neighbours.scores)
    np.testing.assert_array_equal(loaded.positive_rank, ranking.positive_rank)
    np.testing.assert_array_equal(loaded.exclude_rows, np.arange(10))
    assert loaded.metric == "l1" and not loaded.neighbours.higher_is_better
    assert loaded.codes.classes == ["0", "1", "2"]  # labels come back as strings
    part = ranking.select(np.array([7, 2]))
    assert part.num_queries == 2
    np.testing.assert_array_equal(part.neighbours.indices, ranking.neighbours.indices[[7, 2]])
    assert part.positive_rank[part.positive_query == 0].tolist() == (
        ranking.positive_rank[ranking.positive_query == 7].tolist()
    )


@pytest.mark.parametrize("damage", ["truncate", "garbage", "missing_key", "bad_row"])
def test_a_damaged_ranking_file_is_refused_by_name(tmp_path: Path, damage: str) -> None:
    vectors = np.eye(4, dtype=np.float32)
    ranking = rank(vectors, vectors, [0, 0, 1, 1], [0, 0, 1, 1], k=2)
    path = ranking.save(tmp_path / "ranking.npz")
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(b"\x00" * 64)
    else:
        with np.load(path) as archive:
            arrays = {name: archive[name] for name in archive.files}
        if damage == "missing_key":
            del arrays["positive_rank"]
        else:
            arrays["indices"][0, 0] = 99
        np.savez(path, **arrays)
    with pytest.raises(ValueError, match="ranking.npz"):
        Ranking.load(path)


def test_bad_arguments_are_one_line_errors() -> None:
    x = np.eye(3, dtype=np.float32)
    with pytest.raises(ValueError, match="k must be a positive integer, got -5"):
        rank(x, x, k=-5)
    with pytest.raises(ValueError, match="exclude_rows"):
        rank(x, x, exclude_rows=np.array([0, 1, 3]))
    with pytest.raises(ValueError, match="D=4"):
        rank(x, np.eye(4, dtype=np.float32))
