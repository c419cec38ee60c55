"""The app factory: a catalogue and a model loaded once, behind a FastAPI application.

::

    from lookalike.serve import ServeSettings, create_app

    app = create_app("runs/index", model="efficientnet_lite:lite0")     # or ModelSpec(...)
    # uvicorn.run(app, host="127.0.0.1", port=8000), or lookalike.serve.run_server(...)

Without a model the server still searches by item id and by vector (a catalogue embedded
offline); image and text queries then answer 400 saying so.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles

from lookalike import __version__
from lookalike.models.embedder import Embedder
from lookalike.models.spec import ModelSpec, build_embedder
from lookalike.serve.batcher import MicroBatcher
from lookalike.serve.encoders import ImageEncoder, TextEncoder, text_support
from lookalike.serve.errors import install_error_handlers
from lookalike.serve.metrics import MetricsMiddleware, ServeMetrics
from lookalike.serve.middleware import BodyLimitMiddleware, SecurityHeadersMiddleware
from lookalike.serve.routes import items, search, system
from lookalike.serve.settings import ServeSettings
from lookalike.serve.state import ServerState
from lookalike.serve.store import CatalogueStore
from lookalike.utils.devices import resolve_device

logger = logging.getLogger(__name__)

DESCRIPTION = (
    "Top-k image retrieval over a lookalike index: search by image, text (CLIP models), "
    "catalogue item or vector; add and delete items durably. Errors are JSON: "
    '`{"error": "<one line>", "status": <code>}`.'
)


def create_app(
    index_dir: str | os.PathLike[str],
    model: ModelSpec | Embedder | str | None = None,
    settings: ServeSettings | None = None,
) -> FastAPI:
    """Load the index (and replay its journal) and the model once; return the application.

    Args:
        index_dir: An index folder written by ``lookalike index`` /
            :func:`~lookalike.pipeline.indexing.build_index`.
        model: The model that embedded the index (a :class:`ModelSpec`, a built
            :class:`Embedder`, or a backbone name); its fingerprint must match the index's.
            None serves search by item id and by vector only.
        settings: Limits, batching, durability and access; None: ``ServeSettings()``.

    Returns:
        A FastAPI app; run it with uvicorn (one worker: the catalogue lives in its memory).

    Raises:
        FileNotFoundError: The index folder does not exist.
        ValueError: The index is damaged or from another model, the journal is damaged or
            belongs to another index, or another server holds the state folder.
    """
    settings = settings or ServeSettings()
    resolve_device(settings.device)  # a bad device fails before anything is opened
    embedder = _embedder(model)
    store = CatalogueStore(
        index_dir,
        settings.resolved_state_dir(index_dir),
        fingerprint=None if embedder is None else embedder.fingerprint(),
        compact_every=settings.compact_every,
    )
    try:
        state = _server_state(store, embedder, settings)
    except BaseException:
        store.close()  # let a corrected retry open the state folder
        raise

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state.start()
        try:
            yield
        finally:
            state.stop()

    app = FastAPI(
        title="lookalike",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.serve = state
    install_error_handlers(app)
    app.include_router(search.router)
    app.include_router(items.router)
    app.include_router(system.router)
    app.mount("/static", StaticFiles(directory=_static_dir()), name="static")
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type"],
        )
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.request_bytes)
    app.add_middleware(SecurityHeadersMiddleware)
    app.add_middleware(MetricsMiddleware, metrics=state.metrics)
    logger.info(
        "serving %s: %d items, model %s, text search %s",
        index_dir,
        store.size(),
        state.model_name or "none",
        "on" if state.text_batcher is not None else f"off ({state.text_unavailable})",
    )
    return app


def _server_state(
    store: CatalogueStore, embedder: Embedder | None, settings: ServeSettings
) -> ServerState:
    """The state behind the routes: metrics, token, and the model's encoders and batchers."""
    metrics = ServeMetrics(store.size, lambda: len(store.transactions))
    state = ServerState(store=store, settings=settings, metrics=metrics)
    state.token = settings.resolved_token()
    state.text_unavailable = text_support(embedder)
    if embedder is None:
        return state
    device = resolve_device(settings.device)
    state.model_name = str(embedder.config.get("backbone", "model"))
    state.image_encoder = ImageEncoder(embedder, device)
    state.image_batcher = MicroBatcher(
        state.image_encoder, settings.batch_max, settings.batch_wait_ms, "image",
        metrics.observe_batch("image"),
    )  # fmt: skip
    if state.text_unavailable is None:
        state.text_encoder = TextEncoder(embedder, device)
        state.text_batcher = MicroBatcher(
            state.text_encoder, settings.batch_max, settings.batch_wait_ms, "text",
            metrics.observe_batch("text"),
        )  # fmt: skip
    return state


def _embedder(model: ModelSpec | Embedder | str | None) -> Embedder | None:
    if model is None or isinstance(model, Embedder):
        return model
    spec = ModelSpec(backbone=model) if isinstance(model, str) else model
    return build_embedder(spec)


def _static_dir() -> Path:
    return Path(str(resources.files("lookalike.serve").joinpath("static")))
