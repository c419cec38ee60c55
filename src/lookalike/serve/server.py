"""Run a catalogue server with uvicorn: what ``lookalike serve`` calls."""

from __future__ import annotations

import os
from collections.abc import Callable

from lookalike.models.embedder import Embedder
from lookalike.models.spec import ModelSpec
from lookalike.serve.app import create_app
from lookalike.serve.settings import ServeSettings

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000


def run_server(
    index_dir: str | os.PathLike[str],
    model: ModelSpec | Embedder | str | None = None,
    settings: ServeSettings | None = None,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    log_level: str = "info",
    on_start: Callable[[str], None] | None = None,
) -> None:
    """Serve ``index_dir`` until interrupted (one process: the catalogue lives in its memory).

    Args:
        index_dir: The index folder.
        model: The model that embedded it, or None for search by item id and vector only.
        settings: Limits, batching, durability, access.
        host: Interface to bind; localhost unless told otherwise.
        port: TCP port (0: any free port).
        log_level: uvicorn's log level.
        on_start: Called with the server's URL once the catalogue and model are loaded.
    """
    import uvicorn

    app = create_app(index_dir, model=model, settings=settings)
    if on_start is not None:
        on_start(f"http://{host}:{port}/")
    uvicorn.run(app, host=host, port=port, log_level=log_level, workers=1)
