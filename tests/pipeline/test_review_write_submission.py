"""Review of ``write_submission`` against a brute-force ranking written here: distances rank and
reject in their own sense (smaller is better), and a Kaggle CSV of labels holds k distinct
labels even where one class fills the first ``3 * k`` neighbours."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lookalike.embed.store import EmbeddingSet
from lookalike.pipeline.indexing import build_index
from lookalike.pipeline.submission import write_submission

INFO = {"fingerprint": "cafe"}


def brute_force(
    query: np.ndarray, gallery: np.ndarray, items: list[str], metric: str, k: int,
    threshold: float | None, token: str = "no_match",
) -> list[list[str]]:
    """Every gallery row scored, sorted best first, first occurrences kept, token placed."""
    rows = []
    for q in query:
        if metric == "l2":
            scores = np.sqrt(((gallery.astype(np.float64) - q) ** 2).sum(axis=1))
            order = np.argsort(scores, kind="stable")
        else:
            scores = gallery.astype(np.float64) @ q
            order = np.argsort(-scores, kind="stable")
        kept: list[tuple[str, float]] = []
        for g in order:
            if items[g] not in [item for item, _ in kept]:
                kept.append((items[g], float(scores[g])))
        names = [item for item, _ in kept]
        if threshold is not None:
            worse = [s > threshold if metric == "l2" else s < threshold for _, s in kept]
            names.insert(worse.index(True) if any(worse) else len(kept), token)
        rows.append(names[:k])
    return rows


def test_l2_ranks_and_rejects_smaller_distances_first(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    gallery = rng.normal(size=(30, 8)).astype(np.float32)
    queries = np.concatenate([gallery[:6] + 0.05 * rng.normal(size=(6, 8)),
                              rng.normal(size=(6, 8)) * 3]).astype(np.float32)
    g_ids = [f"g{i}" for i in range(30)]
    q_ids = [f"q{i}" for i in range(12)]
    gallery_set = EmbeddingSet(gallery, g_ids, [f"/g/{i}.jpg" for i in g_ids],
                               [f"c{i % 7}" for i in range(30)], INFO)
    query_set = EmbeddingSet(queries, q_ids, [f"/q/{i}.jpg" for i in q_ids], [None] * 12, INFO)
    build_index(gallery_set, tmp_path / "index", metric="l2")
    distances = np.sort(np.sqrt(((queries[:, None] - gallery[None]) ** 2).sum(-1)), axis=1)
    threshold = float(np.median(distances[:, 0]))  # some queries reject at rank 1, some not

    out = write_submission(tmp_path / "index", query_set, tmp_path / "s.json", k=4,
                           names="id", threshold=threshold)
    expected = brute_force(queries, gallery, g_ids, "l2", 4, threshold)
    assert json.loads(out.path.read_text()) == dict(zip(q_ids, expected, strict=True))
    first = [row[0] == "no_match" for row in expected]
    assert first[:6] == [False] * 6 and any(first[6:])

    out = write_submission(tmp_path / "index", query_set, tmp_path / "s.csv", k=3,
                           threshold=threshold)
    table = pd.read_csv(out.path, keep_default_na=False)
    labels = [f"c{i % 7}" for i in range(30)]
    assert table["Id"].tolist() == q_ids
    assert [row.split() for row in table["Predicted"]] == brute_force(
        queries, gallery, labels, "l2", 3, threshold)


def test_a_class_filling_the_first_3k_neighbours_still_gives_k_labels(tmp_path: Path) -> None:
    """20 images of class "big" sit around the query; k=5 searches 15 deep at first."""
    rng = np.random.default_rng(0)
    centre = rng.normal(size=16)
    near = centre + 0.05 * rng.normal(size=(20, 16))
    far = rng.normal(size=(12, 16)) * 2
    normalise = lambda x: (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    gallery = normalise(np.concatenate([near, far]))
    labels = ["big"] * 20 + [f"c{i}" for i in range(12)]
    g_ids = [f"g{i}" for i in range(32)]
    gallery_set = EmbeddingSet(gallery, g_ids, [f"/g/{i}.jpg" for i in g_ids], labels, INFO)
    queries = normalise(np.stack([centre, -centre]))
    query_set = EmbeddingSet(queries, ["q0", "q1"], ["/q/0.jpg", "/q/1.jpg"], [None] * 2, INFO)
    build_index(gallery_set, tmp_path / "index")

    out = write_submission(tmp_path / "index", query_set, tmp_path / "s.csv", k=5)
    rows = [row.split() for row in pd.read_csv(out.path)["Predicted"]]
    assert rows == brute_force(queries, gallery, labels, "cosine", 5, None)
    assert [len(row) for row in rows] == [5, 5]
    assert rows[0][0] == "big"


def test_a_gallery_of_fewer_labels_than_k_gives_them_all(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    normalise = lambda x: (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    gallery = normalise(rng.normal(size=(9, 8)))
    labels = ["a", "b", "c"] * 3
    g_ids = [f"g{i}" for i in range(9)]
    gallery_set = EmbeddingSet(gallery, g_ids, [f"/g/{i}.jpg" for i in g_ids], labels, INFO)
    query_set = EmbeddingSet(normalise(rng.normal(size=(3, 8))), ["q0", "q1", "q2"],
                             ["/q/0.jpg", "/q/1.jpg", "/q/2.jpg"], [None] * 3, INFO)
    build_index(gallery_set, tmp_path / "index")
    out = write_submission(tmp_path / "index", query_set, tmp_path / "s.csv", k=5,
                           threshold=-1.0, no_match_token="new_whale")
    rows = [row.split() for row in pd.read_csv(out.path)["Predicted"]]
    assert rows == brute_force(query_set.embeddings, gallery, labels, "cosine", 5, -1.0,
                               "new_whale")
    assert all(sorted(row) == ["a", "b", "c", "new_whale"] for row in rows)


@pytest.mark.parametrize("names", ["basename", "relpath", "id"])
def test_json_names_modes_through_the_pipeline(tmp_path: Path, names: str) -> None:
    rng = np.random.default_rng(2)
    normalise = lambda x: (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    g_paths = [f"/data/train/{c}/{i}.jpg" for i, c in enumerate("aabbcc")]
    g_ids = [p.removeprefix("/data/train/") for p in g_paths]
    gallery_set = EmbeddingSet(normalise(rng.normal(size=(6, 8))), g_ids, g_paths,
                               list("aabbcc"), INFO)
    query_set = EmbeddingSet(normalise(rng.normal(size=(2, 8))), ["x/q0.jpg", "y/q1.jpg"],
                             ["/data/test/x/q0.jpg", "/data/test/y/q1.jpg"], [None] * 2, INFO)
    build_index(gallery_set, tmp_path / "index")
    out = write_submission(tmp_path / "index", query_set, tmp_path / "s.json", k=3,
                           names=names)  # type: ignore[arg-type]
    table = json.loads(out.path.read_text())
    spell = {
        "basename": lambda p, i: p.rsplit("/", 1)[1],
        "relpath": lambda p, i: i,  # relative to the deepest folder holding them all
        "id": lambda p, i: i,
    }[names]
    gallery_names = [spell(p, i) for p, i in zip(g_paths, g_ids, strict=True)]
    expected = brute_force(query_set.embeddings, gallery_set.embeddings, gallery_names,
                           "cosine", 3, None)
    keys = [spell(p, i) for p, i in zip(query_set.paths, query_set.ids, strict=True)]
    assert table == dict(zip(keys, expected, strict=True))
