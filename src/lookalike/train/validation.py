"""The retrieval set validated every epoch: its images embedded in one pass, and their roles."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lookalike.data.protocols import RetrievalSplit
from lookalike.data.records import ImageSet


@dataclass
class ValidationSet:
    """A retrieval evaluation embedded in one pass.

    Attributes:
        images: The distinct images to embed (gallery first, then queries not in the gallery).
        labels: Label of each row of ``images``.
        query_rows: ``(Q,)`` rows of ``images`` that are queries.
        gallery_rows: ``(N,)`` rows of ``images`` that form the gallery.
        exclude_self: Queries are in the gallery and must not retrieve their own image.
    """

    images: ImageSet
    labels: list[str | None]
    query_rows: np.ndarray
    gallery_rows: np.ndarray
    exclude_self: bool


def validation_set(split: RetrievalSplit, which: str) -> ValidationSet | None:
    """The val set of ``split`` ("val": its ``val`` images all-vs-all; "test": its query and
    gallery; "none": ``None``)."""
    if which == "none":
        return None
    if which == "val":
        if split.val is None or not len(split.val):
            raise ValueError(
                "data.val_split is 'val' but the split has no val images; set "
                "data.protocol_args.val_fraction (class_disjoint), give a val split column, "
                "or set data.val_split to 'test' or 'none'"
            )
        gallery = split.val
        query = ImageSet([r for r in split.val.records if r.label is not None], "query")
        exclude_self = True
    elif which == "test":
        gallery, query, exclude_self = split.gallery, split.query, split.exclude_self
    else:
        raise ValueError(f"unknown val_split {which!r}; valid: val, test, none")
    row_of = {record.id: row for row, record in enumerate(gallery.records)}
    records = list(gallery.records)
    query_rows = []
    for record in query.records:
        if record.id not in row_of:
            row_of[record.id] = len(records)
            records.append(record)
        query_rows.append(row_of[record.id])
    images = ImageSet(records, "val")
    return ValidationSet(
        images,
        images.labels,
        np.asarray(query_rows, dtype=np.int64),
        np.arange(len(gallery), dtype=np.int64),
        exclude_self,
    )
