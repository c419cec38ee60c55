"""Review: under concurrent additions, deletions and compactions, every answer is a snapshot.

A writer thread adds and deletes items (compacting every few transactions, in the background,
and on demand) on a real server while reader threads search. Each answer must equal the naive
float64 top-k of one catalogue state that existed while the request was in flight (computed
here from the vectors the writer sent), so it holds no deleted item, no duplicate and no item of
another label.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
from serve_helpers import noise_png, serve_in_thread

from lookalike import EmbeddingSet, build_index
from lookalike.serve import ServeSettings, create_app

DIM = 8
LABELS = ("red", "green", "blue")
START = 40
WRITES = 30


@dataclass(frozen=True)
class State:
    """The catalogue after one acknowledged change, and when that change was in flight."""

    items: dict[str, tuple[np.ndarray, str]]
    sent: float
    acknowledged: float


def unit(vector: np.ndarray) -> np.ndarray:
    vector = vector.astype(np.float64)
    return vector / np.linalg.norm(vector)


def naive(state: State, query: np.ndarray, k: int, label: str | None, skip: str | None) -> list:
    """The true top ``k`` (id, cosine) of ``state``: a loop over its items."""
    scored = [
        (float(np.dot(unit(query), vector)), item)
        for item, (vector, item_label) in state.items.items()
        if (label is None or item_label == label) and item != skip
    ]
    scored.sort(key=lambda pair: -pair[0])
    return [(item, score) for score, item in scored[:k]]


def matches(hits: list[dict], expected: list) -> bool:
    return [hit["id"] for hit in hits] == [item for item, _ in expected] and np.allclose(
        [hit["score"] for hit in hits], [score for _, score in expected], atol=1e-5
    )


def test_every_answer_is_the_topk_of_a_state_that_existed_during_the_request(
    tmp_path: Path,
) -> None:
    rng = np.random.default_rng(21)
    vectors = rng.normal(size=(START, DIM)).astype(np.float32)
    ids = [f"start-{i:02d}" for i in range(START)]
    labels = [LABELS[i % 3] for i in range(START)]
    _, folder = build_index(EmbeddingSet(vectors, ids, [""] * START, labels), tmp_path / "index",
                            kind="flat")  # fmt: skip
    settings = ServeSettings(token="", device="cpu", compact_every=4)
    states = [State({i: (unit(v), lab) for i, v, lab in zip(ids, vectors, labels)}, -1.0, -1.0)]
    answers: list[tuple[float, float, np.ndarray, int, str | None, str | None, bool, dict]] = []
    done = threading.Event()
    failures: list[BaseException] = []

    with serve_in_thread(create_app(folder, model=None, settings=settings)) as url:

        def write() -> None:
            try:
                with httpx.Client(base_url=url, timeout=30) as client:
                    for step in range(WRITES):
                        current = dict(states[-1].items)
                        sent = time.monotonic()
                        if step % 3 == 2:
                            doomed = sorted(current)[int(rng.integers(len(current)))]
                            response = client.delete(f"/api/items/{doomed}")
                            del current[doomed]
                        elif step % 10 == 9:
                            response = client.post("/api/admin/compact")
                        else:
                            new = [
                                {"id": f"new-{step:02d}-{j}", "label": LABELS[(step + j) % 3],
                                 "vector": rng.normal(size=DIM).tolist()}
                                for j in range(3)
                            ]  # fmt: skip
                            response = client.post("/api/items/vectors", json={"items": new})
                            for item in new:
                                current[item["id"]] = (unit(np.float32(item["vector"])),
                                                       item["label"])  # fmt: skip
                        assert response.status_code in (200, 201), response.text
                        states.append(State(current, sent, time.monotonic()))
            except Exception as error:  # noqa: BLE001 - a thread hands every failure to the test
                failures.append(error)
            finally:
                done.set()

        def read(seed: int) -> None:
            local = np.random.default_rng(seed)
            try:
                with httpx.Client(base_url=url, timeout=30) as client:
                    while not done.is_set():
                        k = int(local.choice([1, 5, 100 if seed else 12]))
                        label = [None, *LABELS][int(local.integers(4))]
                        by_item = bool(local.integers(2))
                        include_self = bool(local.integers(2))
                        query = local.normal(size=DIM).astype(np.float32)
                        item = None
                        if by_item:
                            item = sorted(states[-1].items)[
                                int(local.integers(len(states[-1].items)))
                            ]
                            query = states[-1].items[item][0]
                            body = {"id": item, "k": k, "label": label,
                                    "include_self": include_self}  # fmt: skip
                        else:
                            body = {"vector": query.tolist(), "k": k, "label": label}
                        began = time.monotonic()
                        route = "item" if by_item else "vector"
                        response = client.post(f"/api/search/{route}", json=body)
                        ended = time.monotonic()
                        if by_item and response.status_code == 404:
                            continue  # deleted while the request was on its way
                        assert response.status_code == 200, response.text
                        answers.append((began, ended, query, k, label, item, include_self,
                                        response.json()))  # fmt: skip
            except Exception as error:  # noqa: BLE001 - a thread hands every failure to the test
                failures.append(error)

        threads = [threading.Thread(target=write)] + [
            threading.Thread(target=read, args=(seed,)) for seed in range(2)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        info = httpx.get(f"{url}/api/info").json()
    assert not failures, failures
    assert len(answers) > 20
    assert not info["generation"].startswith("content-")  # compacted while searches ran
    assert info["items"] == len(states[-1].items)
    final = states[-1]
    assert len(final.items) == START + 3 * sum(
        1 for s in range(WRITES) if s % 3 != 2 and s % 10 != 9
    ) - sum(1 for s in range(WRITES) if s % 3 == 2)
    for began, ended, query, k, label, item, include_self, body in answers:
        hits = body["results"][0]["hits"]
        found = [hit["id"] for hit in hits]
        assert len(found) == len(set(found)), found
        assert label is None or {hit["label"] for hit in hits} <= {label}
        skip = None if (item is None or include_self) else item
        if skip is not None:
            assert skip not in found
        # the states that could have been live: made no later than the request ended, and
        # not replaced before it began
        candidates = [
            state
            for number, state in enumerate(states)
            if state.sent <= ended
            and (number + 1 == len(states) or states[number + 1].acknowledged >= began)
        ]
        assert any(matches(hits, naive(state, query, k, label, skip)) for state in candidates), (
            found,
            label,
            k,
            item,
        )


def test_concurrent_image_requests_share_batches_but_keep_their_own_rows(
    tiny_clip, clip_index: Path
) -> None:
    """Clients uploading several images at once (batched together by the micro-batcher) each
    get, image by image and in order, the answer that image gets alone."""
    payloads = [noise_png(seed) for seed in range(12)]
    settings = ServeSettings(token="", device="cpu", batch_wait_ms=30.0, batch_max=8)
    with serve_in_thread(create_app(clip_index, model=tiny_clip, settings=settings)) as url:
        with httpx.Client(base_url=url, timeout=60) as client:
            alone = [image_answer(client, [payload])[0] for payload in payloads]
        answers: dict[int, list] = {}
        failures: list[BaseException] = []

        def ask(number: int) -> None:
            chosen = [(number * 5 + j) % len(payloads) for j in range(1 + number % 4)]
            try:
                with httpx.Client(base_url=url, timeout=60) as client:
                    answers[number] = [chosen, image_answer(client, [payloads[i] for i in chosen])]
            except Exception as error:  # noqa: BLE001 - a thread hands every failure to the test
                failures.append(error)

        threads = [threading.Thread(target=ask, args=(number,)) for number in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        metrics = httpx.get(f"{url}/metrics").text
    assert not failures, failures
    assert len(answers) == 8
    for chosen, found in answers.values():
        assert len(found) == len(chosen)
        for image, (ids, scores) in zip(chosen, found):
            assert ids == alone[image][0]
            np.testing.assert_allclose(scores, alone[image][1], atol=1e-5)
    # some batch held more than one request's images (else this test checked nothing)
    sizes = [line for line in metrics.splitlines()
             if line.startswith('lookalike_batch_size_bucket{encoder="image",le="1.0"}')]  # fmt: skip
    count = [line for line in metrics.splitlines()
             if line.startswith('lookalike_batch_size_count{encoder="image"}')]  # fmt: skip
    assert float(sizes[0].split()[-1]) < float(count[0].split()[-1])


def image_answer(client: httpx.Client, payloads: list[bytes]) -> list[tuple[list, list]]:
    files = [("images", (f"q{i}.png", data, "image/png")) for i, data in enumerate(payloads)]
    response = client.post("/api/search/image", files=files,
                           data={"k": "6", "use_threshold": "false"})  # fmt: skip
    assert response.status_code == 200, response.text
    return [
        ([hit["id"] for hit in result["hits"]], [hit["score"] for hit in result["hits"]])
        for result in response.json()["results"]
    ]
