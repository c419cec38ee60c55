"""Micro-batching: concurrent queries share one forward pass, run off the event loop.

Each request hands its prepared inputs (image tensors, texts) to :meth:`MicroBatcher.submit` and
awaits their embeddings. One worker thread takes the first waiting input, lets others join it
for at most ``max_wait_ms`` or until ``max_batch`` are there, embeds them together and wakes
each request with its own row. Under load the queue fills while a batch runs, so the next batch
forms without waiting and throughput grows with the number of clients (the dynamic batching of
serving systems such as NVIDIA Triton); alone, a query waits at most ``max_wait_ms``.
``max_batch=1`` switches batching off: one input per forward pass, in arrival order.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np

logger = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass
class _Pending(Generic[T]):
    item: T
    future: asyncio.Future[np.ndarray]
    loop: asyncio.AbstractEventLoop


_STOP = object()


class MicroBatcher(Generic[T]):
    """A queue of inputs embedded in bounded batches by one worker thread.

    Args:
        run_batch: ``list of B inputs -> (B, D)`` float32 rows, row ``i`` for input ``i``;
            called on the worker thread only.
        max_batch: Most inputs per call (1: no batching).
        max_wait_ms: Longest time the first input of a batch waits for others.
        name: Names the worker thread and log lines ("image", "text").
        on_batch: Called with each batch's size (for metrics), on the worker thread.
    """

    def __init__(
        self,
        run_batch: Callable[[list[T]], np.ndarray],
        max_batch: int = 16,
        max_wait_ms: float = 5.0,
        name: str = "batch",
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        if int(max_batch) < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        if float(max_wait_ms) < 0:
            raise ValueError(f"max_wait_ms must be 0 or more, got {max_wait_ms}")
        self.run_batch = run_batch
        self.max_batch = int(max_batch)
        self.max_wait = float(max_wait_ms) / 1000.0
        self.name = name
        self.on_batch = on_batch
        self._queue: queue.Queue[object] = queue.Queue()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        """Whether the worker thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Start the worker thread (idempotent)."""
        if self.running:
            return
        self._thread = threading.Thread(
            target=self._work, name=f"lookalike-{self.name}-batcher", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Let the worker finish the batch it is running, then end it."""
        if not self.running:
            return
        self._queue.put(_STOP)
        assert self._thread is not None
        self._thread.join(timeout)

    async def submit(self, items: Sequence[T]) -> np.ndarray:
        """Embed ``items`` (each may share a batch with other requests' inputs).

        Returns:
            ``(len(items), D)`` float32 rows, in the order of ``items``.

        The worker is started if it is not running (an app used without its lifespan).

        Raises:
            Exception: Whatever ``run_batch`` raised for a batch holding one of the items.
        """
        self.start()
        loop = asyncio.get_running_loop()
        futures = []
        for item in items:
            future: asyncio.Future[np.ndarray] = loop.create_future()
            self._queue.put(_Pending(item, future, loop))
            futures.append(future)
        rows = await asyncio.gather(*futures)
        return np.stack(rows).astype(np.float32, copy=False)

    def _next_batch(self, first: _Pending[T]) -> tuple[list[_Pending[T]], bool]:
        """``first`` and the inputs that join it; True when a stop request was met."""
        batch = [first]
        deadline = time.monotonic() + self.max_wait
        while len(batch) < self.max_batch:
            remaining = deadline - time.monotonic()
            try:
                entry = (
                    self._queue.get(timeout=remaining)
                    if remaining > 0
                    else (self._queue.get_nowait())
                )
            except queue.Empty:
                break
            if entry is _STOP:
                return batch, True
            assert isinstance(entry, _Pending)
            batch.append(entry)
        return batch, False

    def _work(self) -> None:
        stopping = False
        while not stopping:
            entry = self._queue.get()
            if entry is _STOP:
                break
            assert isinstance(entry, _Pending)
            batch, stopping = self._next_batch(entry)
            live = [pending for pending in batch if not pending.future.cancelled()]
            if not live:
                continue
            try:
                rows = np.asarray(self.run_batch([pending.item for pending in live]))
                if rows.shape[0] != len(live):
                    raise RuntimeError(
                        f"{self.name} batch of {len(live)} inputs gave {rows.shape[0]} rows"
                    )
            except Exception as error:  # handed to every waiting request, which answers 500
                logger.exception("%s batch of %d failed", self.name, len(live))
                for pending in live:
                    pending.loop.call_soon_threadsafe(_fail, pending.future, error)
                continue
            if self.on_batch is not None:
                self.on_batch(len(live))
            for pending, row in zip(live, rows):
                pending.loop.call_soon_threadsafe(_resolve, pending.future, row)


def _resolve(future: asyncio.Future[np.ndarray], row: np.ndarray) -> None:
    if not future.done():  # a client that went away cancelled its future
        future.set_result(row)


def _fail(future: asyncio.Future[np.ndarray], error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)
