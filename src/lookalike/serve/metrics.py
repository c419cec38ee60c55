"""Prometheus metrics of one server: requests, latency, errors, catalogue size, batch sizes.

Each app gets its own :class:`~prometheus_client.CollectorRegistry`, so several apps in one
process (tests, a Python user serving two catalogues) never collide. Requests are labelled by
the route's template (``/api/image/{item_id:path}``), never by the raw path, so the number of
series stays bounded whatever clients send.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CONTENT_TYPE = CONTENT_TYPE_LATEST
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
UNMATCHED = "unmatched"


class ServeMetrics:
    """The metrics of one server and the registry they live in.

    Args:
        catalogue_size: Returns the number of live items (read at each scrape).
        journal_length: Returns the journal transactions since the last compaction.
    """

    def __init__(
        self, catalogue_size: Callable[[], int], journal_length: Callable[[], int]
    ) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "lookalike_requests", "HTTP requests answered", ["method", "route", "status"],
            registry=self.registry,
        )  # fmt: skip
        self.latency = Histogram(
            "lookalike_request_seconds", "Time to answer a request", ["method", "route"],
            buckets=LATENCY_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.errors = Counter(
            "lookalike_errors", "Requests answered with a 4xx or 5xx status", ["route", "status"],
            registry=self.registry,
        )  # fmt: skip
        self.batch_size = Histogram(
            "lookalike_batch_size", "Queries embedded per forward pass", ["encoder"],
            buckets=BATCH_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.index_items = Gauge(
            "lookalike_index_items", "Live items in the catalogue", registry=self.registry
        )
        self.index_items.set_function(lambda: float(catalogue_size()))
        self.journal = Gauge(
            "lookalike_journal_transactions", "Journal transactions since the last compaction",
            registry=self.registry,
        )  # fmt: skip
        self.journal.set_function(lambda: float(journal_length()))

    def observe_batch(self, encoder: str) -> Callable[[int], None]:
        """A callback recording batch sizes of ``encoder`` ("image", "text")."""
        histogram = self.batch_size.labels(encoder=encoder)
        return lambda size: histogram.observe(size)

    def render(self) -> bytes:
        """The text exposition format of every metric."""
        return generate_latest(self.registry)


class MetricsMiddleware:
    """ASGI middleware counting and timing every HTTP request into :class:`ServeMetrics`."""

    def __init__(self, app: ASGIApp, metrics: ServeMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def record_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, record_status)
        finally:
            route = scope.get("route")
            name = getattr(route, "path", UNMATCHED) if route is not None else UNMATCHED
            method = scope.get("method", "")
            self.metrics.requests.labels(method, name, str(status)).inc()
            self.metrics.latency.labels(method, name).observe(time.perf_counter() - started)
            if status >= 400:
                self.metrics.errors.labels(name, str(status)).inc()
