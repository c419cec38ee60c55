"""Review: every search route answers the true top-k of the live catalogue.

The reference is a naive float64 loop written here over the vectors the catalogue stores (its
live rows), through additions, deletions and compactions: vector and item searches, with and
without a label filter, the "no match" marker, and ``k`` larger than the catalogue.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from lookalike import EmbeddingSet, build_index
from lookalike.serve import ServeSettings, create_app

DIM = 8
LABELS = ("red", "green", "blue", "rare")


def label_of(number: int) -> str:
    """Mostly three labels; every 25th item "rare", so a filter has fewer items than k."""
    return "rare" if number % 25 == 7 else LABELS[number % 3]


def serve(folder: Path, **settings: object) -> TestClient:
    options = {"token": "", "device": "cpu", "compact_every": 0, **settings}
    return TestClient(create_app(folder, model=None, settings=ServeSettings(**options)))


def build(folder: Path, kind: str, metric: str, rows: int, seed: int = 3) -> Path:
    vectors = np.random.default_rng(seed).normal(size=(rows, DIM)).astype(np.float32)
    ids = [f"item-{i:03d}" for i in range(rows)]
    labels = [label_of(i) for i in range(rows)]
    _, path = build_index(EmbeddingSet(vectors, ids, [""] * rows, labels), folder, kind=kind,
                          metric=metric)  # fmt: skip
    return path


def naive_scores(query: np.ndarray, stored: np.ndarray, metric: str) -> np.ndarray:
    """``(N,)`` float64 scores of ``query`` against ``stored`` rows, one pair at a time."""
    q = query.astype(np.float64)
    if metric == "cosine":
        q = q / np.linalg.norm(q)
    scores = np.empty(len(stored))
    for row, vector in enumerate(stored.astype(np.float64)):
        if metric in ("cosine", "ip"):
            scores[row] = float(np.dot(q, vector))
        elif metric == "l2":
            scores[row] = float(np.sqrt(np.sum((q - vector) ** 2)))
        else:
            scores[row] = float(np.sum(np.abs(q - vector)))
    return scores


def naive_topk(
    client: TestClient,
    query: np.ndarray,
    k: int,
    label: str | None = None,
    exclude: str | None = None,
) -> tuple[list[str], np.ndarray]:
    """The true top ``k`` live items (ids, scores in the metric's sense), from the stored rows."""
    store = client.app.state.serve.store
    live = store.catalogue.live_rows()
    metric = store.metric
    scores = naive_scores(query, live.vectors, metric)
    keep = [
        row
        for row, item in enumerate(live.ids)
        if (label is None or live.labels[row] == label) and item != exclude
    ]
    sign = -1.0 if metric in ("cosine", "ip") else 1.0
    order = sorted(keep, key=lambda row: sign * scores[row])[:k]
    return [live.ids[row] for row in order], scores[order]


def hits_of(body: dict, query: int = 0) -> list[dict]:
    return body["results"][query]["hits"]


def check_answer(body: dict, expected: tuple[list[str], np.ndarray], query: int = 0) -> None:
    hits = [hit for hit in hits_of(body, query) if not hit["no_match"]]
    ids, scores = expected
    assert [hit["id"] for hit in hits] == ids
    np.testing.assert_allclose([hit["score"] for hit in hits], scores, rtol=1e-5, atol=1e-5)


def post(client: TestClient, route: str, **body: object) -> dict:
    response = client.post(f"/api/search/{route}", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def check_all_searches(client: TestClient, rng: np.random.Generator, size: int) -> None:
    """Vector and item searches, with every label and none, at several k, against the loop."""
    live = client.app.state.serve.store.catalogue.live_rows()
    assert len(live.ids) == size
    for k in (1, 6, size + 5):
        for label in (None, "green", "rare", "absent"):
            vector = rng.normal(size=DIM).astype(np.float32)
            body = post(client, "vector", vector=vector.tolist(), k=k, label=label,
                        use_threshold=False)  # fmt: skip
            check_answer(body, naive_topk(client, vector, k, label))
            item = live.ids[int(rng.integers(len(live.ids)))]
            stored = live.vectors[live.ids.index(item)]
            body = post(client, "item", id=item, k=k, label=label, use_threshold=False)
            check_answer(body, naive_topk(client, stored, k, label, exclude=item))
            body = post(client, "item", id=item, k=k, label=label, include_self=True,
                        use_threshold=False)  # fmt: skip
            check_answer(body, naive_topk(client, stored, k, label))


@pytest.mark.parametrize(
    ("kind", "metric"),
    [("flat", "cosine"), ("flat", "l2"), ("flat", "ip"), ("exact_torch", "l1")],
)
def test_searches_are_the_true_topk_through_changes_and_compaction(
    tmp_path: Path, kind: str, metric: str
) -> None:
    folder = build(tmp_path / "index", kind, metric, rows=60)
    rng = np.random.default_rng(5)
    next_id = 60
    with serve(folder) as client:
        size = 60
        check_all_searches(client, rng, size)
        for step in range(3):
            # delete a few of the best answers of a query (tombstones ahead of live rows) ...
            vector = rng.normal(size=DIM).astype(np.float32)
            doomed = naive_topk(client, vector, 5)[0]
            for item in doomed:
                assert client.delete(f"/api/items/{item}").status_code == 200
            # ... and add new items, some of them the rare label
            new = [
                {"id": f"item-{next_id + i:03d}", "label": label_of(next_id + i),
                 "vector": rng.normal(size=DIM).tolist()}
                for i in range(8)
            ]  # fmt: skip
            next_id += 8
            assert client.post("/api/items/vectors", json={"items": new}).status_code == 201
            size += 8 - 5
            check_all_searches(client, rng, size)
            for item in doomed:  # a deleted item is no answer, nor a query
                response = client.post("/api/search/item", json={"id": item})
                assert response.status_code == 404
            if step == 1:
                assert client.post("/api/admin/compact").status_code == 200
                check_all_searches(client, rng, size)


def test_label_filter_finds_a_label_behind_many_tombstones(tmp_path: Path) -> None:
    """Every nearer item deleted, and the label's items ranked last: the filter must still give
    all of them, in order."""
    folder = build(tmp_path / "index", "flat", "l2", rows=100)
    with serve(folder) as client:
        vector = np.zeros(DIM, dtype=np.float32)
        order = naive_topk(client, vector, 100)[0]
        for item in order[:60]:
            assert client.delete(f"/api/items/{item}").status_code == 200
        rare = [item for item in order if label_of(int(item.split("-")[1])) == "rare"]
        live_rare = [item for item in rare if item not in order[:60]]
        for k in (1, 3, 10):
            body = post(client, "vector", vector=vector.tolist(), k=k, label="rare")
            expected = naive_topk(client, vector, k, "rare")
            check_answer(body, expected)
            assert [hit["id"] for hit in hits_of(body) if not hit["no_match"]] == live_rare[:k]


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_no_match_is_inserted_once_at_the_first_failing_rank(tmp_path: Path, metric: str) -> None:
    """With a label filter, deletions and self-exclusion, "no match" sits before the first
    neighbour whose score is worse than the threshold (the loop's scores), or after the last
    neighbour when a list is shorter than ``k`` (``apply_threshold``'s padding rule), once;
    never with ``use_threshold=false``."""
    folder = build(tmp_path / "index", "flat", metric, rows=60)
    rng = np.random.default_rng(9)
    with serve(folder) as client:
        for item in naive_topk(client, np.ones(DIM, np.float32), 6)[0]:
            assert client.delete(f"/api/items/{item}").status_code == 200
        live = client.app.state.serve.store.catalogue.live_rows()
        for trial in range(12):
            label = (None, "blue")[trial % 2]
            k = (4, 8, 30)[trial % 3]
            item = live.ids[int(rng.integers(len(live.ids)))]
            query = live.vectors[live.ids.index(item)]
            ids, scores = naive_topk(client, query, k, label, exclude=item)
            # halfway between two neighbours' scores (at a score itself, float32 rounding decides)
            position = int(rng.integers(len(scores)))
            after = (
                scores[position + 1] if position + 1 < len(scores) else 2 * scores[-1] - scores[-2]
            )
            threshold = float((scores[position] + after) / 2)
            body = post(client, "item", id=item, k=k, label=label, threshold=threshold)
            hits = hits_of(body)
            better = scores >= threshold if metric == "cosine" else scores <= threshold
            passing = int(np.argmin(better)) if not better.all() else len(scores)
            flags = [hit["no_match"] for hit in hits]
            if passing < k:
                assert flags.count(True) == 1 and flags.index(True) == passing, (passing, flags)
            else:
                assert not any(flags)
            assert [hit["rank"] for hit in hits] == list(range(1, len(hits) + 1))
            assert len(hits) == min(k, len(ids) + flags.count(True))
            assert [hit["id"] for hit in hits if not hit["no_match"]] == ids[
                : len(hits) - flags.count(True)
            ]
            plain = post(client, "item", id=item, k=k, label=label, use_threshold=False)
            assert not any(hit["no_match"] for hit in hits_of(plain))
            check_answer(plain, (ids, scores))


def test_k_beyond_the_catalogue_gives_every_live_item(tmp_path: Path) -> None:
    folder = build(tmp_path / "index", "flat", "cosine", rows=12)
    with serve(folder, max_k=50) as client:
        for item in ("item-000", "item-005"):
            assert client.delete(f"/api/items/{item}").status_code == 200
        vector = np.ones(DIM, dtype=np.float32)
        body = post(client, "vector", vector=vector.tolist(), k=50, use_threshold=False)
        check_answer(body, naive_topk(client, vector, 50))
        assert len(hits_of(body)) == 10
        stored = client.app.state.serve.store.vectors_of(["item-001"])[0]
        body = post(client, "item", id="item-001", k=50, use_threshold=False)
        check_answer(body, naive_topk(client, stored, 50, exclude="item-001"))
        assert len(hits_of(body)) == 9


@pytest.mark.parametrize("scale", [1e20, 1e-30, 1e-300, 1e39])
def test_a_cosine_query_is_its_direction_at_any_scale(tmp_path: Path, scale: float) -> None:
    """Cosine ranks by direction: a query scaled by any finite factor has the same answer
    (float32 overflow or underflow in its norm made it a zero query: every score 0)."""
    folder = build(tmp_path / "index", "flat", "cosine", rows=30)
    with serve(folder) as client:
        vector = client.app.state.serve.store.vectors_of(["item-004"])[0].astype(np.float64)
        expected = naive_topk(client, vector, 5)
        assert expected[0][0] == "item-004"
        body = post(client, "vector", vector=(vector * scale).tolist(), k=5)
        check_answer(body, expected)
        added = {"id": "scaled", "label": "red", "vector": (vector * scale).tolist()}
        assert client.post("/api/items/vectors", json={"items": [added]}).status_code == 201
        stored = client.app.state.serve.store.vectors_of(["scaled"])[0]
        np.testing.assert_allclose(stored, vector / np.linalg.norm(vector), atol=1e-6)


@pytest.mark.parametrize("metric", ["l2", "ip"])
@pytest.mark.parametrize("scale", [1e39, 1e20])
def test_a_vector_whose_scores_overflow_float32_is_refused(
    tmp_path: Path, metric: str, scale: float
) -> None:
    """Beyond float32's range a query became infinite (500), and a norm whose square overflows
    made every l2 distance infinite (200 with null scores, in no order): both are a 422."""
    folder = build(tmp_path / "index", "flat", metric, rows=10)
    with serve(folder) as client:
        vector = (np.ones(DIM) * scale).tolist()
        for response in (
            client.post("/api/search/vector", json={"vector": vector}),
            client.post("/api/items/vectors", json={"items": [{"id": "x", "vector": vector}]}),
        ):
            assert response.status_code == 422, response.text
            message = response.json()["error"]
            assert "float32" in message and "\n" not in message
        assert client.get("/api/info").json()["items"] == 10


def test_the_stored_threshold_still_applies_after_compaction(tmp_path: Path) -> None:
    folder = build(tmp_path / "index", "flat", "l2", rows=30)
    vector = np.zeros(DIM, dtype=np.float32)
    with serve(folder) as client:
        _, scores = naive_topk(client, vector, 6)
    threshold = float((scores[2] + scores[3]) / 2)  # "no match" 4th
    _, folder = build_index(
        EmbeddingSet(
            np.random.default_rng(3).normal(size=(30, DIM)).astype(np.float32),
            [f"item-{i:03d}" for i in range(30)], [""] * 30, [label_of(i) for i in range(30)],
        ),
        tmp_path / "stored", kind="flat", metric="l2", threshold=threshold,
    )  # fmt: skip
    with serve(folder) as client:
        for compact in (False, True):
            if compact:
                assert client.post("/api/admin/compact").status_code == 200
            body = post(client, "vector", vector=vector.tolist(), k=6)
            assert body["threshold"] == pytest.approx(threshold)
            assert [hit["no_match"] for hit in hits_of(body)] == [False] * 3 + [True] + [False] * 2
