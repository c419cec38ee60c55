"""Review of the milvus kind (Milvus Lite) against a naive float64 loop over all pairs.

Label filters, deletes and row numbers after deletes are held to the naive search over the rows
that remain; a saved and loaded index must keep all of it. Ties between identical rows: every
copy is returned with equal scores (Milvus Lite happens to put the lowest row first; that order
is not promised).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from naive_reference import naive_scores

pytest.importorskip("pymilvus", reason="needs lookalike[milvus]")

from lookalike.index import create_index, load_index, save_index
from lookalike.index.metrics import get_metric
from lookalike.index.milvus_index import MilvusIndex
from lookalike.utils.folders import ArtefactError, read_manifest, write_manifest

DIM = 12
N = 240
LABELS = ["a", "b", "c", None]


def naive_top(
    scores: np.ndarray, metric: str, k: int, keep: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Top ``k`` rows among ``keep`` (a boolean mask over the gallery), padded with -1."""
    better = get_metric(metric).higher_is_better
    key = np.where(keep, -scores if better else scores, np.inf)
    order = np.argsort(key, axis=1, kind="stable")[:, :k]
    real = np.take_along_axis(keep[None, :].repeat(len(scores), 0), order, 1)
    top = np.take_along_axis(scores, order, 1)
    return (np.where(real, order, -1), np.where(real, top, get_metric(metric).worst()))


@pytest.fixture(scope="module")
def data() -> dict[str, Any]:
    rng = np.random.default_rng(21)
    return {
        "gallery": (rng.normal(size=(N, DIM)) + 0.5).astype(np.float32),
        "queries": (rng.normal(size=(15, DIM)) + 0.5).astype(np.float32),
        "labels": [LABELS[i % 4] for i in range(N)],
        "extra": (rng.normal(size=(5, DIM)) + 0.5).astype(np.float32),
    }


@pytest.fixture(scope="module", params=["cosine", "ip", "l2"])
def deleted(request: pytest.FixtureRequest, data: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """An index with every third row deleted, then five rows added with label "z"."""
    metric = request.param
    index = create_index("milvus", DIM, metric)
    assert isinstance(index, MilvusIndex)
    index.add(data["gallery"], labels=data["labels"])
    removed = np.arange(0, N, 3)
    index.delete(removed)
    index.add(data["extra"], labels=["z"] * 5)
    gallery = np.concatenate([data["gallery"], data["extra"]])
    keep = np.ones(N + 5, bool)
    keep[removed] = False
    labels = np.array(data["labels"] + ["z"] * 5, dtype=object)
    yield {"index": index, "metric": metric, "gallery": gallery, "keep": keep, "labels": labels}
    index.close()


def check_equal(result: Any, expected: tuple[np.ndarray, np.ndarray]) -> None:
    indices, scores = expected
    np.testing.assert_array_equal(result.indices, indices)
    np.testing.assert_allclose(result.scores, scores, rtol=1e-5, atol=1e-4)


def test_search_after_deletes_equals_the_naive_search_over_the_rows_left(
    deleted: dict[str, Any], data: dict[str, Any]
) -> None:
    index, metric = deleted["index"], deleted["metric"]
    assert index.ntotal == N + 5  # deleted rows keep their numbers; new rows count on
    scores = naive_scores(data["queries"], deleted["gallery"], metric)
    check_equal(index.search(data["queries"], 10), naive_top(scores, metric, 10, deleted["keep"]))
    # more than the rows left: every live row, then -1 and the worst score
    check_equal(
        index.search(data["queries"], N + 5), naive_top(scores, metric, N + 5, deleted["keep"])
    )


@pytest.mark.parametrize("wanted", [["a"], ["b", "z"], ["c", "a"], ["nobody"]])
def test_label_filter_equals_a_filtered_naive_search(
    deleted: dict[str, Any], data: dict[str, Any], wanted: list[str]
) -> None:
    index, metric = deleted["index"], deleted["metric"]
    scores = naive_scores(data["queries"], deleted["gallery"], metric)
    keep = deleted["keep"] & np.isin(deleted["labels"], wanted)
    check_equal(
        index.search(data["queries"], 70, labels=wanted), naive_top(scores, metric, 70, keep)
    )


def test_a_loaded_index_keeps_deletes_labels_and_records(
    deleted: dict[str, Any], data: dict[str, Any], tmp_path: Path
) -> None:
    index, metric = deleted["index"], deleted["metric"]
    ids = [f"r{i}" for i in range(N + 5)]
    labels = [None if v is None else str(v) for v in deleted["labels"]]
    save_index(index, tmp_path / "ix", ids, labels=labels, fingerprint="fp", extra={"threshold": 1})
    loaded, metadata = load_index(tmp_path / "ix", expected_fingerprint="fp")
    try:
        assert (metadata.ids, metadata.labels, metadata.threshold) == (ids, labels, 1.0)
        assert metadata.params == index.params == loaded.params and loaded.ntotal == N + 5
        for wanted in (None, ["b", "z"]):
            before = index.search(data["queries"], 12, labels=wanted)
            after = loaded.search(data["queries"], 12, labels=wanted)
            np.testing.assert_array_equal(after.indices, before.indices)
            np.testing.assert_array_equal(after.scores, before.scores)
        with pytest.raises(ValueError, match=r"rows \[0, 3\] of the milvus index were deleted"):
            loaded.reconstruct([0, 1, 3])
        np.testing.assert_allclose(
            loaded.reconstruct([1, N + 4]),
            get_metric(metric).prepare(deleted["gallery"][[1, N + 4]]),
            atol=1e-6,
        )
    finally:
        loaded.close()


def test_duplicates_tie_and_zero_rows_score_zero(data: dict[str, Any]) -> None:
    gallery = data["gallery"].copy()
    copies = [4, 90, 91, N - 1]
    gallery[copies] = 3.0 * gallery[4]
    gallery[10] = 0.0
    for metric in ("cosine", "ip", "l2"):
        index = create_index("milvus", DIM, metric)
        try:
            index.add(gallery)
            top = index.search(gallery[4:5], 4)
            assert set(top.indices[0].tolist()) == set(copies)
            assert np.ptp(top.scores[0]) == pytest.approx(0.0, abs=1e-5)
            if metric == "cosine":
                every = index.search(gallery[:3], N)
                assert (every.scores[every.indices == 10] == 0.0).all()
                assert (index.search(np.zeros((1, DIM), np.float32), 3).scores == 0.0).all()
        finally:
            index.close()


def test_a_collection_of_another_index_type_is_refused(
    data: dict[str, Any], tmp_path: Path
) -> None:
    """Before the fix an HNSW collection under a folder saying FLAT loaded as the exact kind."""
    folders = []
    for index_type in ("FLAT", "HNSW"):
        index = create_index("milvus", DIM, "l2", index_type=index_type)
        index.add(data["gallery"])
        folders.append(save_index(index, tmp_path / index_type, [str(i) for i in range(N)]))
        index.close()
    target = folders[0] / "milvus"
    shutil.rmtree(target)
    shutil.copytree(folders[1] / "milvus", target)
    manifest = read_manifest(folders[0])
    write_manifest(folders[0], manifest.kind, manifest.fingerprint, manifest.extra)
    with pytest.raises(ArtefactError, match="index type HNSW, but .* index type FLAT") as caught:
        load_index(folders[0])
    assert "\n" not in str(caught.value) and str(target) in str(caught.value)
