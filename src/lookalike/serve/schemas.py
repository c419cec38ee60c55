"""The JSON bodies of the API, as pydantic models (they make the OpenAPI page at ``/docs``)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator


def _refuse_booleans(value: Any) -> Any:
    """JSON ``true`` is no number: pydantic's lax mode would read it as 1 (``k``, a vector's
    value), answering a client's mistake instead of naming it."""
    values = value if isinstance(value, list) else [value]
    if any(isinstance(item, bool) for item in values):
        raise ValueError("a boolean is not a number")
    return value


class SearchOptions(BaseModel):
    """What every search takes besides its query.

    An unknown field is refused (422 naming it): a misspelt option such as ``"lable"`` would
    otherwise be ignored, and the answer would hold items of every label.
    """

    model_config = ConfigDict(extra="forbid")

    k: int | None = Field(None, description="Results per query (1 to the server's max_k).")
    threshold: float | None = Field(
        None,
        allow_inf_nan=False,
        description="Rejection threshold overriding the index's own (in the metric's sense).",
    )
    use_threshold: bool = Field(True, description="Insert 'no match' where a threshold says so.")
    label: str | None = Field(None, description="Only return items with this label.")

    _k_is_a_number = field_validator("k", mode="before")(_refuse_booleans)


class TextSearch(SearchOptions):
    """Search images by text (CLIP models)."""

    text: str = Field(..., min_length=1, description="What to look for, in words.")


class ItemSearch(SearchOptions):
    """Search by an item of the catalogue (its stored embedding is the query)."""

    id: str = Field(..., min_length=1, description="The item's id.")
    include_self: bool = Field(False, description="Keep the item itself among its results.")


class VectorSearch(SearchOptions):
    """Search by a raw embedding (of the index's dimension, from the index's model)."""

    vector: list[float] = Field(..., min_length=1, description="The query embedding.")

    _values_are_numbers = field_validator("vector", mode="before")(_refuse_booleans)


class Hit(BaseModel):
    """One ranked answer: an item, or the 'no match' marker at its rank."""

    rank: int
    id: str | None = Field(None, description="The item; null for the 'no match' marker.")
    label: str | None = None
    score: float | None = Field(None, description="Similarity or distance (metric's sense).")
    image_url: str | None = None
    no_match: bool = Field(False, description="True for the 'no match' marker.")


class QueryResult(BaseModel):
    """The ranked answers to one query."""

    query: str = Field(..., description="The query: a file name, the text, the item id ...")
    hits: list[Hit]


class SearchResponse(BaseModel):
    """The answers to every query of one request."""

    k: int
    threshold: float | None = Field(None, description="The rejection threshold applied.")
    label: str | None = None
    metric: str
    results: list[QueryResult]


class VectorItem(BaseModel):
    """An item to add with its embedding already computed."""

    id: str = Field(..., min_length=1)
    label: str | None = None
    vector: list[float] = Field(..., min_length=1)

    _values_are_numbers = field_validator("vector", mode="before")(_refuse_booleans)


class VectorItems(BaseModel):
    """Items to add with their embeddings (servers without a model)."""

    items: list[VectorItem] = Field(..., min_length=1)


class Changed(BaseModel):
    """The outcome of an addition or deletion, acknowledged once it is durable."""

    ids: list[str]
    items: int = Field(..., description="Live items in the catalogue afterwards.")
    seq: int = Field(..., description="The journal transaction that holds the change.")


class Item(BaseModel):
    """One catalogue item."""

    id: str
    label: str | None = None
    image_url: str | None = None


class ItemPage(BaseModel):
    """A page of the catalogue's live items, in row order."""

    total: int
    offset: int
    items: list[Item]


class Compacted(BaseModel):
    """What a compaction did."""

    rows: int
    dropped: int
    journal_seq: int
    generation: str
    kept_transactions: int
