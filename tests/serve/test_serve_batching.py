"""Micro-batching: concurrent queries share forward passes, bounded in size, and embed exactly as
they would alone."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from serve_helpers import noise_png, serve_in_thread

from lookalike.serve import ServeSettings, create_app
from lookalike.serve.batcher import MicroBatcher
from lookalike.serve.encoders import ImageEncoder
from lookalike.serve.uploads import decode_upload
from lookalike.utils.devices import resolve_device


class Recorder:
    """A ``run_batch`` that doubles its inputs, records batch sizes and takes ``delay`` seconds."""

    def __init__(self, delay: float = 0.02) -> None:
        self.sizes: list[int] = []
        self.delay = delay
        self.threads: set[str] = set()

    def __call__(self, items: list[float]) -> np.ndarray:
        self.sizes.append(len(items))
        self.threads.add(threading.current_thread().name)
        time.sleep(self.delay)
        return np.array([[2.0 * item, float(len(items))] for item in items], dtype=np.float32)


async def submit_concurrently(batcher: MicroBatcher, count: int) -> list[np.ndarray]:
    return await asyncio.gather(*(batcher.submit([float(i)]) for i in range(count)))


def test_concurrent_submissions_share_batches_up_to_the_bound() -> None:
    recorder = Recorder()
    batcher = MicroBatcher(recorder, max_batch=8, max_wait_ms=30, name="test")
    batcher.start()
    try:
        rows = asyncio.run(submit_concurrently(batcher, 40))
    finally:
        batcher.stop()
    assert [float(row[0, 0]) for row in rows] == [2.0 * i for i in range(40)]  # each its own row
    assert sum(recorder.sizes) == 40
    assert max(recorder.sizes) == 8 and len(recorder.sizes) < 40
    assert recorder.threads == {"lookalike-test-batcher"}  # off the event loop's thread


def test_batch_size_one_switches_batching_off() -> None:
    recorder = Recorder(delay=0.001)
    batcher = MicroBatcher(recorder, max_batch=1, max_wait_ms=30)
    batcher.start()
    try:
        asyncio.run(submit_concurrently(batcher, 12))
    finally:
        batcher.stop()
    assert recorder.sizes == [1] * 12


def test_a_lone_query_waits_at_most_max_wait() -> None:
    recorder = Recorder(delay=0.0)
    batcher = MicroBatcher(recorder, max_batch=64, max_wait_ms=50)
    batcher.start()
    try:
        started = time.perf_counter()
        asyncio.run(submit_concurrently(batcher, 1))
        elapsed = time.perf_counter() - started
    finally:
        batcher.stop()
    assert recorder.sizes == [1]
    assert 0.04 <= elapsed < 1.0


def test_several_items_of_one_request_are_one_batch() -> None:
    recorder = Recorder(delay=0.0)
    batcher = MicroBatcher(recorder, max_batch=16, max_wait_ms=5)
    batcher.start()
    try:
        rows = asyncio.run(batcher.submit([1.0, 2.0, 3.0]))
    finally:
        batcher.stop()
    assert recorder.sizes == [3] and rows[:, 0].tolist() == [2.0, 4.0, 6.0]


def test_a_failing_batch_fails_each_waiting_request() -> None:
    def broken(items: list[float]) -> np.ndarray:
        raise RuntimeError("the model broke")

    batcher = MicroBatcher(broken, max_batch=4, max_wait_ms=20)
    batcher.start()

    async def run() -> list[BaseException | np.ndarray]:
        calls = (batcher.submit([float(i)]) for i in range(3))
        return await asyncio.gather(*calls, return_exceptions=True)

    try:
        outcomes = asyncio.run(run())
        assert all(isinstance(o, RuntimeError) and "broke" in str(o) for o in outcomes)
        assert batcher.running  # the worker survives a failing batch
    finally:
        batcher.stop()


def test_batched_embeddings_equal_unbatched(tiny_clip) -> None:
    encoder = ImageEncoder(tiny_clip, resolve_device("cpu"))
    uploads = [decode_upload(noise_png(seed), "x.png", 10**6, 10**6) for seed in range(12)]
    prepared = [encoder.prepare(upload.image) for upload in uploads]
    together = encoder(prepared)
    alone = np.concatenate([encoder([tensor]) for tensor in prepared])
    np.testing.assert_allclose(together, alone, rtol=1e-5, atol=1e-6)


def batch_histogram(metrics: str, encoder: str = "image") -> tuple[float, float]:
    """(count, sum) of the batch size histogram in a /metrics text."""
    found = {}
    for field in ("count", "sum"):
        match = re.search(
            rf'lookalike_batch_size_{field}{{encoder="{encoder}"}} ([0-9.e+]+)', metrics
        )
        assert match, metrics
        found[field] = float(match.group(1))
    return found["count"], found["sum"]


async def concurrent_image_queries(url: str, count: int) -> list[dict]:
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:

        async def query(seed: int) -> dict:
            files = [("images", (f"{seed}.png", noise_png(seed), "image/png"))]
            response = await client.post("/api/search/image", files=files, data={"k": "3"})
            assert response.status_code == 200, response.text
            return response.json()

        return list(await asyncio.gather(*(query(seed) for seed in range(count))))


@pytest.mark.parametrize("batch_max", [8, 1])
def test_a_real_server_batches_concurrent_queries(
    tiny_clip, clip_index: Path, batch_max: int
) -> None:
    settings = ServeSettings(batch_max=batch_max, batch_wait_ms=100, token="", device="cpu")
    app = create_app(clip_index, model=tiny_clip, settings=settings)
    with serve_in_thread(app) as url:
        answers = asyncio.run(concurrent_image_queries(url, 16))
        count, total = batch_histogram(httpx.get(f"{url}/metrics").text)
    assert total == 16
    if batch_max == 1:
        assert count == 16
    else:
        assert count < 16 and total / count > 1  # several queries per forward pass
    sequential = app.state.serve.image_encoder
    for seed, answer in enumerate(answers):  # the same results as one query at a time
        upload = decode_upload(noise_png(seed), "q.png", 10**6, 10**6)
        alone = sequential([sequential.prepare(upload.image)])
        result, _ = app.state.serve.store.search(alone, 3)
        np.testing.assert_allclose(
            [hit["score"] for hit in answer["results"][0]["hits"]], result.scores[0], atol=1e-5
        )
