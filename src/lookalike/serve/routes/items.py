"""Catalogue items: add (images or vectors), delete, look up, show an image, compact.

Additions and deletions answer only once they are durable (see :mod:`lookalike.serve.store`)
and sit behind the optional bearer token. An item's image is found through its id, so the only
files this server reads are those the catalogue names; a path in the URL is never a file path.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Query, Request, Response, UploadFile
from starlette.concurrency import run_in_threadpool

from lookalike.serve.auth import require_token
from lookalike.serve.errors import ApiError
from lookalike.serve.results import image_url
from lookalike.serve.routes.common import (
    check_item_id,
    check_vector,
    embed_uploads,
    read_uploads,
    server,
)
from lookalike.serve.schemas import Changed, Compacted, Item, ItemPage, VectorItems
from lookalike.serve.state import ServerState
from lookalike.serve.store import NewItem, ReadOnlyCatalogue
from lookalike.serve.thumbnails import ThumbnailError, thumbnail
from lookalike.serve.uploads import file_suffix

router = APIRouter(prefix="/api", tags=["items"])
_WRITE = [Depends(require_token)]
_AUTH_ERRORS = {
    401: {"description": "No bearer token"},
    403: {"description": "A wrong bearer token"},
    409: {"description": "An id already in the catalogue"},
}


@router.post("/items", status_code=201, response_model=Changed, dependencies=_WRITE,
             responses=_AUTH_ERRORS)  # fmt: skip
async def add_items(
    request: Request,
    images: Annotated[list[UploadFile], File(description="The new items' images.")],
    ids: Annotated[list[str], Form(description="One id per image, in order.")],
    labels: Annotated[list[str] | None, Form(description="One label per image (optional).")] = None,
) -> Changed:
    """Add items: each image is embedded with the index's model, stored, journaled durably,
    then searchable. Acknowledged additions survive a crash of the server."""
    state = server(request)
    state.require_images()
    if len(ids) != len(images):
        raise ApiError(422, f"{len(images)} images but {len(ids)} ids; give one id per image")
    if labels is not None and len(labels) != len(images):
        raise ApiError(422, f"{len(images)} images but {len(labels)} labels")
    for item_id in ids:
        check_item_id(item_id)
    uploads = await read_uploads(state, images)
    vectors = await embed_uploads(state, uploads)
    items = [
        NewItem(
            id=item_id,
            label=(labels[number] or None) if labels else None,
            vector=vectors[number],
            image=upload.data,
            suffix=file_suffix(upload.format),
        )
        for number, (item_id, upload) in enumerate(zip(ids, uploads))
    ]
    return await _commit(state, items)


@router.post("/items/vectors", status_code=201, response_model=Changed, dependencies=_WRITE,
             responses=_AUTH_ERRORS)  # fmt: skip
async def add_vector_items(request: Request, body: VectorItems) -> Changed:
    """Add items whose embeddings were computed elsewhere (by the index's model); they have
    no image."""
    state = server(request)
    if len(body.items) > state.settings.max_images:
        raise ApiError(
            413, f"{len(body.items)} items in one request; the limit is {state.settings.max_images}"
        )
    items = [
        NewItem(
            id=check_item_id(item.id),
            label=item.label or None,
            vector=check_vector(state, item.vector, f"the vector of {item.id!r}"),
        )
        for item in body.items
    ]
    return await _commit(state, items)


async def _commit(state: ServerState, items: list[NewItem]) -> Changed:
    try:
        seq = await run_in_threadpool(state.store.add, items)
    except KeyError as error:
        raise ApiError(409, error.args[0]) from None
    except ReadOnlyCatalogue as error:
        raise ApiError(409, str(error)) from None
    if state.store.needs_compaction():
        state.compact_in_background()
    return Changed(ids=[item.id for item in items], items=state.store.size(), seq=seq)


@router.delete("/items/{item_id:path}", response_model=Changed, dependencies=_WRITE,
               responses={**_AUTH_ERRORS, 404: {"description": "No such item"}})  # fmt: skip
async def delete_item(request: Request, item_id: str) -> Changed:
    """Delete an item durably; it leaves search results at once and the index folder at the
    next compaction."""
    state = server(request)
    try:
        seq = await run_in_threadpool(state.store.delete, [item_id])
    except KeyError:
        raise ApiError(404, f"no item {item_id!r} in the catalogue") from None
    except ReadOnlyCatalogue as error:
        raise ApiError(409, str(error)) from None
    if state.store.needs_compaction():
        state.compact_in_background()
    return Changed(ids=[item_id], items=state.store.size(), seq=seq)


@router.get("/items", response_model=ItemPage)
async def list_items(
    request: Request,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> ItemPage:
    """The catalogue's live items, a page at a time."""
    total, rows = server(request).store.list_items(offset, limit)
    items = [
        Item(id=item_id, label=label, image_url=image_url(item_id) if has_image else None)
        for item_id, label, has_image in rows
    ]
    return ItemPage(total=total, offset=offset, items=items)


@router.get("/items/{item_id:path}", response_model=Item,
            responses={404: {"description": "No such item"}})  # fmt: skip
async def get_item(request: Request, item_id: str) -> Item:
    """An item's label and image URL."""
    state = server(request)
    try:
        label, path = state.store.item(item_id)
    except KeyError:
        raise ApiError(404, f"no item {item_id!r} in the catalogue") from None
    return Item(id=item_id, label=label, image_url=image_url(item_id) if path else None)


@router.get("/image/{item_id:path}", response_class=Response,
            responses={200: {"content": {"image/jpeg": {}}},
                       404: {"description": "No such item, or no readable image"}})  # fmt: skip
async def get_image(
    request: Request,
    item_id: str,
    size: Annotated[int | None, Query(description="Longest side in pixels.")] = None,
) -> Response:
    """A JPEG thumbnail of an item's image, re-encoded from the file the catalogue names."""
    state = server(request)
    side = state.settings.thumbnail_size if size is None else size
    if not 16 <= side <= state.settings.max_thumbnail_size:
        raise ApiError(
            422, f"size must be between 16 and {state.settings.max_thumbnail_size}, got {side}"
        )
    try:
        _, path = state.store.item(item_id)
    except KeyError:
        raise ApiError(404, f"no item {item_id!r} in the catalogue") from None
    if path is None:
        raise ApiError(404, f"item {item_id!r} has no image")
    try:
        data = await run_in_threadpool(thumbnail, path, side, state.settings.max_pixels)
    except ThumbnailError as error:
        raise ApiError(404, f"item {item_id!r}: {error}") from None
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": "max-age=60"})


@router.post("/admin/compact", response_model=Compacted, dependencies=_WRITE,
             responses=_AUTH_ERRORS)  # fmt: skip
async def compact(request: Request) -> Compacted:
    """Write the catalogue as a new index folder (deleted rows dropped) and reset the journal."""
    state = server(request)
    try:
        report = await run_in_threadpool(state.store.compact)
    except ReadOnlyCatalogue as error:
        raise ApiError(409, str(error)) from None
    return Compacted(**report.__dict__)
