"""Serve a catalogue over HTTP: JSON API, web page, micro-batched queries, durable changes.

::

    from lookalike.serve import ServeSettings, create_app, run_server

    app = create_app("runs/index", model="efficientnet_lite:lite0")   # a FastAPI app
    run_server("runs/index", model="efficientnet_lite:lite0", port=8000)

Needs the ``serve`` extra (``pip install "lookalike[serve]"``).
"""

from lookalike.serve.app import create_app
from lookalike.serve.server import run_server
from lookalike.serve.settings import ServeSettings

__all__ = ["ServeSettings", "create_app", "run_server"]
