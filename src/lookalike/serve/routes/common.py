"""What the routes share: the server state, search options, uploaded images to embeddings."""

from __future__ import annotations

import math
import unicodedata

import numpy as np
from fastapi import Request, UploadFile
from starlette.concurrency import run_in_threadpool

from lookalike.serve.errors import ApiError
from lookalike.serve.results import ranked_hits
from lookalike.serve.schemas import SearchResponse
from lookalike.serve.state import ServerState
from lookalike.serve.uploads import Upload, decode_upload

MAX_ID_CHARS = 256
# Largest norm of a non-cosine vector: l2 and ip scores of two such vectors (|q|^2 + |x|^2,
# q.x) stay well inside float32, where the index computes them.
_MAX_FLOAT32_NORM = float(np.sqrt(np.finfo(np.float32).max)) / 4


def server(request: Request) -> ServerState:
    """The :class:`ServerState` of the app answering ``request``."""
    return request.app.state.serve  # type: ignore[no-any-return]


def resolve_k(state: ServerState, k: int | None) -> int:
    """``k`` or the default, within ``[1, max_k]`` (422 otherwise)."""
    value = state.settings.default_k if k is None else k
    if not 1 <= value <= state.settings.max_k:
        raise ApiError(422, f"k must be between 1 and {state.settings.max_k}, got {value}")
    return value


def resolve_threshold(
    state: ServerState, threshold: float | None, use_threshold: bool
) -> float | None:
    """The threshold to apply: the one given, else the index's; None with ``use_threshold``
    false (giving a threshold as well is a contradiction: 422)."""
    if threshold is not None and not math.isfinite(threshold):
        raise ApiError(422, f"threshold must be a finite number, got {threshold}")
    if not use_threshold:
        if threshold is not None:
            raise ApiError(422, "a threshold together with use_threshold=false; give one of them")
        return None
    return state.store.threshold if threshold is None else float(threshold)


def check_vector(state: ServerState, vector: list[float] | np.ndarray, name: str) -> np.ndarray:
    """A ``(D,)`` float32 query or item vector: the index's width, finite, non-zero for cosine,
    its scores within float32 for the other metrics (422 otherwise).

    A cosine vector is L2-normalised here, in float64 after dividing by its largest value,
    before it becomes float32: values beyond float32's range (1e39, 1e-300) would otherwise turn
    into infinities or zeros. Only its direction counts, so any finite scale is answered the
    same.
    """
    array = np.asarray(vector, dtype=np.float64).reshape(-1)
    if array.shape[0] != state.store.dim:
        raise ApiError(
            422, f"{name} has {array.shape[0]} values; this index holds {state.store.dim}-d vectors"
        )
    if not np.isfinite(array).all():
        raise ApiError(422, f"{name} holds NaN or infinite values")
    if state.store.metric == "cosine":
        largest = float(np.max(np.abs(array)))
        if largest == 0:
            raise ApiError(422, f"{name} is all zeros; cosine similarity needs a direction")
        scaled = array / largest
        return (scaled / np.linalg.norm(scaled)).astype(np.float32)
    with np.errstate(over="ignore"):  # an overflowing norm is refused just below
        norm = float(np.linalg.norm(array))
    if not norm <= _MAX_FLOAT32_NORM:
        raise ApiError(
            422,
            f"{name} has norm {norm:.3g}; scores are float32, so a {state.store.metric} vector's "
            f"norm must be at most {_MAX_FLOAT32_NORM:.3g}",
        )
    return array.astype(np.float32)


def check_item_id(item_id: str) -> str:
    """A new item's id: 1 to 256 printable characters (422 otherwise)."""
    if not 1 <= len(item_id) <= MAX_ID_CHARS:
        raise ApiError(
            422, f"an item id must have 1 to {MAX_ID_CHARS} characters, got {len(item_id)}"
        )
    if item_id != item_id.strip() or any(unicodedata.category(c)[0] == "C" for c in item_id):
        raise ApiError(422, f"item id {item_id!r} has control characters or surrounding spaces")
    return item_id


async def read_uploads(state: ServerState, files: list[UploadFile]) -> list[Upload]:
    """Read, sniff, bound and decode uploaded images (decoding off the event loop)."""
    settings = state.settings
    if len(files) > settings.max_images:
        raise ApiError(
            413, f"{len(files)} images in one request; the limit is {settings.max_images}"
        )
    contents = []
    for upload in files:
        if upload.size is not None and upload.size > settings.max_upload_bytes:
            raise ApiError(
                413,
                f"image {upload.filename!r} has {upload.size} bytes; the limit is "
                f"{settings.max_upload_bytes}",
            )
        contents.append((upload.filename or "upload", await upload.read()))

    # decoded as `embed` decodes gallery files (large JPEGs at the model's resize size)
    encoder = state.image_encoder
    draft_size = None if encoder is None else encoder.embedder.preprocessing.resize_size

    def decode_all() -> list[Upload]:
        return [
            decode_upload(data, name, settings.max_upload_bytes, settings.max_pixels, draft_size)
            for name, data in contents
        ]

    return await run_in_threadpool(decode_all)


async def embed_uploads(state: ServerState, uploads: list[Upload]) -> np.ndarray:
    """``(len(uploads), D)`` embeddings, through the micro-batcher."""
    encoder, batcher = state.require_images()
    prepared = await run_in_threadpool(lambda: [encoder.prepare(u.image) for u in uploads])
    return await batcher.submit(prepared)


async def search_response(
    state: ServerState,
    queries: np.ndarray,
    names: list[str],
    k: int,
    threshold: float | None,
    label: str | None,
    exclude_ids: list[str | None] | None = None,
) -> SearchResponse:
    """Search the catalogue (off the event loop) and shape the answer."""
    result, neighbours = await run_in_threadpool(state.store.search, queries, k, label, exclude_ids)
    return SearchResponse(
        k=k,
        threshold=threshold,
        label=label,
        metric=state.store.metric,
        results=ranked_hits(result, neighbours, names, k, threshold),
    )
