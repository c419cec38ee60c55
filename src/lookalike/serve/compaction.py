"""Compaction's folder: a catalogue's live rows written as a new index folder, and generations.

The journal grows with every change and a deleted row stays in the index as a tombstone until
the index is rebuilt. Compaction writes the live rows (deleted ones dropped, additions in) as a
new index folder, swapped in whole with :func:`lookalike.utils.folders.atomic_folder`, whose
``extra["serve"]`` records:

- ``generation``: a new random id, which the reset journal's header names;
- ``previous``: the generation it replaced, which the old journal's header names;
- ``journal_seq``: the last journal transaction the folder holds.

An index folder never compacted has as generation a hash of its rows' records
(:func:`content_generation`). :meth:`lookalike.serve.store.CatalogueStore.compact` copies the
live rows under its lock, writes them here without it, then swaps the new state in and rewrites
the journal with only the transactions after ``journal_seq``; why a kill at any instant loses
or doubles no change is told there.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lookalike.index.base import Index
from lookalike.index.io import IndexMetadata, save_index
from lookalike.serve.catalogue import LiveRows

SERVE_KEY = "serve"
"""Where an index folder keeps its generation: ``index.json`` ``extra.serve``."""


@dataclass(frozen=True)
class CompactionReport:
    """What a compaction did: the rows written, deleted rows dropped, and the new generation."""

    rows: int
    dropped: int
    journal_seq: int
    generation: str
    kept_transactions: int


@dataclass(frozen=True)
class CompactedFolder:
    """A new index folder written by :func:`write_compacted`: its index (the live rows, in
    memory), row records, metadata and generation."""

    index: Index
    ids: list[str]
    paths: list[str]
    labels: list[str | None]
    metadata: IndexMetadata
    generation: str


def write_compacted(
    empty: Index,
    live: LiveRows,
    index_dir: Path,
    metadata: IndexMetadata,
    previous: str,
    journal_seq: int,
    fingerprint: str | None,
    resolve_image: Callable[[str], Path],
) -> CompactedFolder:
    """Fill ``empty`` (an empty copy of the served index) with ``live`` and write it over
    ``index_dir`` as a new generation, swapped in whole (manifest last).

    Args:
        empty: An empty index of the served kind, keeping its training (``Index.empty_copy``).
        live: The live rows, copied out under the store's lock.
        index_dir: The served index folder.
        metadata: The served folder's metadata (kind, metric, fingerprint, extras kept).
        previous: The generation being replaced.
        journal_seq: The last journal transaction ``live`` holds.
        fingerprint: The model of the served catalogue (written with the new folder).
        resolve_image: Makes a row's image path absolute.
    """
    if len(live.ids):
        empty.add(live.vectors, labels=live.labels)
    generation = uuid.uuid4().hex
    extra = {
        **metadata.extra,
        SERVE_KEY: {"generation": generation, "previous": previous, "journal_seq": journal_seq},
    }
    paths = [str(resolve_image(path)) if path else "" for path in live.paths]
    save_index(empty, index_dir, live.ids, paths, live.labels, fingerprint, extra)
    written = IndexMetadata(
        kind=metadata.kind, params=metadata.params, metric=metadata.metric, dim=metadata.dim,
        ntotal=len(live.ids), ids=live.ids, paths=paths, labels=live.labels,
        fingerprint=fingerprint, extra=extra,
    )  # fmt: skip
    return CompactedFolder(empty, live.ids, paths, live.labels, written, generation)


def content_generation(metadata: IndexMetadata) -> str:
    """The generation of an index folder never compacted: a hash of its rows' records."""
    digest = hashlib.sha256()
    header = [metadata.kind, metadata.metric, metadata.dim, metadata.ntotal, metadata.fingerprint]
    digest.update(json.dumps(header).encode("utf-8"))
    for column in (metadata.ids, metadata.paths, metadata.labels):
        digest.update(json.dumps(column).encode("utf-8"))
    return f"content-{digest.hexdigest()[:16]}"
