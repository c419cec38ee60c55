"""What one running server holds: the catalogue, the model's encoders and their batchers.

Built once by :func:`~lookalike.serve.app.create_app` and shared by every request (through
``app.state.serve``); the routes read it, never build anything per request.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

import torch

from lookalike.serve.batcher import MicroBatcher
from lookalike.serve.encoders import ImageEncoder, TextEncoder
from lookalike.serve.errors import ApiError
from lookalike.serve.metrics import ServeMetrics
from lookalike.serve.settings import ServeSettings
from lookalike.serve.store import CatalogueStore

logger = logging.getLogger(__name__)


@dataclass
class ServerState:
    """The long-lived objects behind the routes.

    Attributes:
        store: The catalogue (index, journal, images).
        settings: Limits and options.
        metrics: This server's Prometheus metrics.
        token: The bearer token write endpoints require, None when open.
        image_encoder: Embeds images; None when the server has no model.
        image_batcher: Batches image queries for ``image_encoder``.
        text_encoder: Embeds text; None when the model has no usable text tower.
        text_batcher: Batches text queries for ``text_encoder``.
        text_unavailable: Why text search is unavailable (None when it is available).
        model_name: The model's backbone name or checkpoint, for ``/api/info``.
    """

    store: CatalogueStore
    settings: ServeSettings
    metrics: ServeMetrics
    token: str | None = None
    image_encoder: ImageEncoder | None = None
    image_batcher: MicroBatcher[torch.Tensor] | None = None
    text_encoder: TextEncoder | None = None
    text_batcher: MicroBatcher[str] | None = None
    text_unavailable: str | None = None
    model_name: str | None = None
    _compaction: threading.Thread | None = field(default=None, repr=False)

    def start(self) -> None:
        """Start the batchers' worker threads."""
        for batcher in (self.image_batcher, self.text_batcher):
            if batcher is not None:
                batcher.start()

    def stop(self) -> None:
        """Stop the batchers, wait for a running compaction, close the journal."""
        for batcher in (self.image_batcher, self.text_batcher):
            if batcher is not None:
                batcher.stop()
        if self._compaction is not None:
            self._compaction.join()
        self.store.close()

    @property
    def ready(self) -> bool:
        """Whether every part that answers queries is running."""
        batchers = [b for b in (self.image_batcher, self.text_batcher) if b is not None]
        return all(batcher.running for batcher in batchers)

    def require_images(self) -> tuple[ImageEncoder, MicroBatcher[torch.Tensor]]:
        """The image encoder and its batcher; 400 when the server has no model."""
        if self.image_encoder is None or self.image_batcher is None:
            raise ApiError(
                400,
                "this server has no model (start it with --model or --checkpoint); search by "
                "item id or by vector instead",
            )
        return self.image_encoder, self.image_batcher

    def require_text(self) -> MicroBatcher[str]:
        """The text batcher; 400 saying why when text search is unavailable."""
        if self.text_batcher is None:
            raise ApiError(400, f"text search is unavailable: {self.text_unavailable}")
        return self.text_batcher

    def compact_in_background(self) -> bool:
        """Start a compaction thread unless one is running; True when one was started."""
        if self.store.compacting or (self._compaction is not None and self._compaction.is_alive()):
            return False
        self._compaction = threading.Thread(
            target=self._compact, name="lookalike-compaction", daemon=True
        )
        self._compaction.start()
        return True

    def _compact(self) -> None:
        try:
            self.store.compact()
        except Exception:  # the journal still holds every change; the next attempt retries
            logger.exception("compaction of %s failed", self.store.index_dir)
