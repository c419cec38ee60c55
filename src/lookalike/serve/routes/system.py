"""Health, readiness, Prometheus metrics, facts about the catalogue, and the web page."""

from __future__ import annotations

from importlib import resources
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse

from lookalike.serve.metrics import CONTENT_TYPE
from lookalike.serve.routes.common import server

router = APIRouter()

# The page loads its script, style and images from this server only.
PAGE_POLICY = (
    "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)


def static_file(name: str) -> str:
    """The text of a file shipped in ``lookalike/serve/static``."""
    return resources.files("lookalike.serve").joinpath("static", name).read_text("utf-8")


@router.get("/healthz", tags=["system"])
async def healthz() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


@router.get("/readyz", tags=["system"], responses={503: {"description": "Not ready"}})
async def readyz(request: Request) -> JSONResponse:
    """Readiness: the catalogue is loaded and the model's batchers run."""
    state = server(request)
    if not state.ready:
        return JSONResponse({"status": "starting", "error": "batchers not running"}, 503)
    return JSONResponse({"status": "ready", "items": state.store.size()})


@router.get("/metrics", tags=["system"], response_class=Response)
async def metrics(request: Request) -> Response:
    """Prometheus metrics (text exposition format)."""
    return Response(server(request).metrics.render(), media_type=CONTENT_TYPE)


@router.get("/api/info", tags=["system"])
async def info(request: Request) -> dict[str, Any]:
    """The catalogue and what the server can search by (the page reads this first)."""
    state = server(request)
    return {
        **state.store.info(),
        "model": state.model_name,
        "image_search": state.image_encoder is not None,
        "text_search": state.text_batcher is not None,
        "text_unavailable": state.text_unavailable,
        "labels": state.store.label_names()[:1000],
        "max_k": state.settings.max_k,
        "default_k": state.settings.default_k,
        "max_images": state.settings.max_images,
        "max_upload_bytes": state.settings.max_upload_bytes,
        "writes_need_token": state.token is not None,
    }


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def page() -> HTMLResponse:
    """The search page."""
    return HTMLResponse(static_file("index.html"), headers={"Content-Security-Policy": PAGE_POLICY})
