"""Compaction: the catalogue's live rows written as a new index folder, then the journal reset.

The journal grows with every change and a deleted row stays in the index as a tombstone until
the index is rebuilt. Compaction writes the live rows (deleted ones dropped, additions in) as a
new index folder, swapped in whole with :func:`lookalike.utils.folders.atomic_folder`, whose
``extra["serve"]`` records:

- ``generation``: a new random id, which the reset journal's header names;
- ``previous``: the generation it replaced, which the old journal's header names;
- ``journal_seq``: the last journal transaction the folder holds.

Then the journal is rewritten with only the transactions after ``journal_seq``. A kill at any
instant therefore leaves the old folder with the full journal, the new folder with the old
journal (whose transactions up to ``journal_seq`` are skipped on replay), or the new folder with
the new journal (see :mod:`lookalike.serve.store`): never a lost or a doubled change.

The store's lock is held only to copy the live rows and to swap the new state in; searches and
changes go on while the folder is written, and changes made meanwhile are replayed onto the new
state from the journal's transactions in memory.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lookalike.index.io import IndexMetadata, save_index
from lookalike.serve.catalogue import Catalogue
from lookalike.serve.journal import JournalHeader

if TYPE_CHECKING:
    from lookalike.serve.store import CatalogueStore

logger = logging.getLogger(__name__)

SERVE_KEY = "serve"


@dataclass(frozen=True)
class CompactionReport:
    """What a compaction did: the rows written, deleted rows dropped, and the new generation."""

    rows: int
    dropped: int
    journal_seq: int
    generation: str
    kept_transactions: int


def compact(store: CatalogueStore) -> CompactionReport:
    """Write ``store``'s live rows as a new index folder, then reset its journal.

    Only one compaction runs at a time; a second call waits for the first, then runs.
    """
    with store.compaction_lock:
        with store.lock:
            seq = store.next_seq - 1
            live = store.catalogue.live_rows()
            template = store.catalogue.index
            dropped = store.catalogue.dead_count
            previous = store.generation
            new_index = template.empty_copy()
        if len(live.ids):
            new_index.add(live.vectors, labels=live.labels)
        generation = uuid.uuid4().hex
        extra = {
            **store.metadata.extra,
            SERVE_KEY: {"generation": generation, "previous": previous, "journal_seq": seq},
        }
        paths = [str(store.resolve_image(path)) if path else "" for path in live.paths]
        # save_index builds the folder beside the old one and swaps it in whole, manifest last.
        save_index(
            new_index, store.index_dir, live.ids, paths, live.labels, store.fingerprint, extra
        )
        with store.lock:
            catalogue = Catalogue(new_index, live.ids, paths, live.labels)
            kept = [t for t in store.transactions if t.seq > seq]
            for transaction in kept:
                store.apply(catalogue, transaction)
            store.catalogue = catalogue
            store.metadata = IndexMetadata(
                kind=store.metadata.kind, params=store.metadata.params,
                metric=store.metadata.metric, dim=store.metadata.dim, ntotal=len(live.ids),
                ids=live.ids, paths=paths, labels=live.labels,
                fingerprint=store.fingerprint, extra=extra,
            )  # fmt: skip
            store.generation = generation
            store.base_seq = seq
            store.transactions = kept
            header = JournalHeader(generation, store.dim, store.fingerprint)
            store.journal.rewrite(header, kept)
            store.remove_unreferenced_images()
    logger.info(
        "compacted %s: %d rows, %d deleted rows dropped, journal reset after sequence %d",
        store.index_dir,
        len(live.ids),
        dropped,
        seq,
    )
    return CompactionReport(len(live.ids), dropped, seq, generation, len(kept))
