"""Search endpoints: by uploaded images, by text, by catalogue item, by raw vector."""

from __future__ import annotations

from typing import Annotated

import numpy as np
from fastapi import APIRouter, File, Form, Request, UploadFile

from lookalike.serve.errors import ApiError
from lookalike.serve.routes.common import (
    check_vector,
    embed_uploads,
    read_uploads,
    resolve_k,
    resolve_threshold,
    search_response,
    server,
)
from lookalike.serve.schemas import ItemSearch, SearchResponse, TextSearch, VectorSearch

router = APIRouter(prefix="/api/search", tags=["search"])

_ERRORS = {
    400: {"description": "The server's model cannot embed this kind of query"},
    413: {"description": "Too many images, a file too large, or too many pixels"},
    415: {"description": "An upload is not an image"},
    422: {"description": "An invalid option (k, threshold, vector ...)"},
}
_IMAGE_FIELDS = ("images", "k", "threshold", "use_threshold", "label")


@router.post("/image", response_model=SearchResponse, responses=_ERRORS)
async def search_by_image(
    request: Request,
    images: Annotated[list[UploadFile], File(description="One or more query images.")],
    k: Annotated[int | None, Form(description="Results per query.")] = None,
    threshold: Annotated[float | None, Form(allow_inf_nan=False)] = None,
    use_threshold: Annotated[bool, Form()] = True,
    label: Annotated[str | None, Form(description="Only items with this label.")] = None,
) -> SearchResponse:
    """Search the catalogue with uploaded images (multipart, several per request).

    Each image is sniffed (its name and declared type are ignored), bounded in bytes and pixels,
    embedded with the index's model together with other clients' concurrent queries, and
    answered with its ranked hits.
    """
    state = server(request)
    # as the JSON searches do: a misspelt "label" would otherwise answer with every label
    unknown = sorted(set((await request.form()).keys()) - set(_IMAGE_FIELDS))
    if unknown:
        fields = ", ".join(_IMAGE_FIELDS)
        raise ApiError(422, f"unknown form fields {', '.join(unknown)}; this search takes {fields}")
    state.require_images()
    top = resolve_k(state, k)
    applied = resolve_threshold(state, threshold, use_threshold)
    uploads = await read_uploads(state, images)
    queries = await embed_uploads(state, uploads)
    names = [upload.name for upload in uploads]
    return await search_response(state, queries, names, top, applied, label or None)


@router.post("/text", response_model=SearchResponse, responses=_ERRORS)
async def search_by_text(request: Request, body: TextSearch) -> SearchResponse:
    """Search images by text with the text tower of a CLIP model."""
    state = server(request)
    batcher = state.require_text()
    top = resolve_k(state, body.k)
    applied = resolve_threshold(state, body.threshold, body.use_threshold)
    text = body.text.strip()
    if not text:
        raise ApiError(422, "text is empty")
    if len(text) > state.settings.max_text_chars:
        raise ApiError(
            413, f"text has {len(text)} characters; the limit is {state.settings.max_text_chars}"
        )
    queries = await batcher.submit([text])
    return await search_response(state, queries, [text], top, applied, body.label)


@router.post(
    "/item", response_model=SearchResponse, responses={404: {"description": "No such item"}}
)
async def search_by_item(request: Request, body: ItemSearch) -> SearchResponse:
    """Search with a catalogue item's stored embedding (nothing is embedded); the item itself
    is left out unless ``include_self``."""
    state = server(request)
    top = resolve_k(state, body.k)
    applied = resolve_threshold(state, body.threshold, body.use_threshold)
    try:
        queries = state.store.vectors_of([body.id])
    except KeyError:
        raise ApiError(404, f"no item {body.id!r} in the catalogue") from None
    exclude: list[str | None] = [None if body.include_self else body.id]
    return await search_response(state, queries, [body.id], top, applied, body.label, exclude)


@router.post("/vector", response_model=SearchResponse, responses=_ERRORS)
async def search_by_vector(request: Request, body: VectorSearch) -> SearchResponse:
    """Search with a raw embedding of the index's dimension (from the index's model)."""
    state = server(request)
    top = resolve_k(state, body.k)
    applied = resolve_threshold(state, body.threshold, body.use_threshold)
    query = check_vector(state, body.vector, "vector")
    return await search_response(state, np.asarray([query]), ["vector"], top, applied, body.label)
