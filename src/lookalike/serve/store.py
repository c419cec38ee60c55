"""A served catalogue on disk: the index folder, a journal of changes, the added items' images.

Layout (the state folder defaults to ``INDEX_DIR.state`` beside the index)::

    INDEX_DIR/                  the index folder (lookalike.index.io), replaced only whole
    INDEX_DIR.state/journal.log acknowledged changes since the index folder was written
    INDEX_DIR.state/images/     the images of added items

**Additions and deletions** are validated, their images written and ``fsync``-ed, then one
journal transaction is appended and ``fsync``-ed, then they are applied in memory, and only then
acknowledged: an acknowledged change is on disk before the client hears of it.

**Start** loads the index folder and replays the journal transactions it does not already hold.
Each index folder written by compaction names its *generation* (a random id), the generation it
replaced (*previous*) and the last journal sequence number it holds (``journal_seq``), in its
``extra["serve"]``; an index folder never compacted has as generation a hash of its content. The
journal's header names the generation it applies to.

**Compaction** (every ``compact_every`` transactions, or on demand) writes the live rows into a
new index folder that is swapped in whole (:func:`lookalike.utils.folders.atomic_folder`), then
rewrites the journal with only the transactions the new folder lacks. A kill at any instant
leaves one of three states, each read back without loss or double application:

1. old folder, full journal (base = old generation): every transaction is replayed;
2. new folder (previous = old generation, holds up to ``journal_seq``), old journal: the
   transactions after ``journal_seq`` are replayed, the others are already in the folder;
3. new folder, new journal (base = new generation): the journal holds only later transactions.

Searches and changes share one lock; compaction holds it only to copy the live rows and to swap
the new state in, so searches go on while the new folder is written.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lookalike.index.base import Index
from lookalike.index.io import load_index
from lookalike.index.result import SearchResult
from lookalike.serve.catalogue import Catalogue, Neighbour
from lookalike.serve.compaction import (
    SERVE_KEY,
    CompactionReport,
    content_generation,
    write_compacted,
)
from lookalike.serve.durable import hold_lock, write_durably
from lookalike.serve.journal import (
    JOURNAL_FILE,
    Journal,
    JournalError,
    JournalHeader,
    Operation,
    Transaction,
)
from lookalike.utils.folders import fsync_directory

logger = logging.getLogger(__name__)

IMAGES_DIR = "images"
LOCK_FILE = "server.lock"


class ReadOnlyCatalogue(ValueError):
    """The served index cannot take changes (it was loaded memory-mapped)."""


@dataclass(frozen=True)
class NewItem:
    """An item to add: its id, label, embedding and image file content.

    Attributes:
        id: The new item's id.
        label: Its label, or None.
        vector: Its ``(D,)`` embedding.
        image: The image file's bytes (kept in the state folder), or None for none.
        suffix: The image file's suffix (".jpg").
    """

    id: str
    label: str | None
    vector: np.ndarray
    image: bytes | None = None
    suffix: str = ".jpg"


class CatalogueStore:
    """A catalogue loaded from its index folder and journal, changed durably, compacted safely.

    Args:
        index_dir: The index folder.
        state_dir: The folder of the journal and added images (created if needed).
        fingerprint: Fingerprint of the model that will embed queries and additions; a
            different one stored with the index is refused. None skips the check.
        compact_every: Transactions after which :meth:`needs_compaction` says so (0: never).

    Raises:
        FileNotFoundError: The index folder does not exist.
        ValueError: The index folder is damaged or from another model, or the journal is
            damaged or written for another index (one line each).
    """

    def __init__(
        self,
        index_dir: str | os.PathLike[str],
        state_dir: str | os.PathLike[str],
        fingerprint: str | None = None,
        compact_every: int = 0,
    ) -> None:
        self.index_dir = Path(index_dir)
        self.state_dir = Path(state_dir).absolute()  # image paths are kept absolute
        self.images_dir = self.state_dir / IMAGES_DIR
        self.compact_every = int(compact_every)
        self.lock = threading.RLock()
        self.compaction_lock = threading.Lock()
        self.images_dir.mkdir(parents=True, exist_ok=True)
        self._lock_file = hold_lock(self.state_dir / LOCK_FILE)
        try:
            self._open(fingerprint)
        except BaseException:
            if hasattr(self, "journal"):
                self.journal.close()
            self._lock_file.close()
            raise

    def _open(self, fingerprint: str | None) -> None:
        """Load the index folder and replay the journal (see the module docstring)."""
        index, metadata = load_index(self.index_dir, fingerprint)
        self.metadata = metadata
        self.fingerprint = metadata.fingerprint or fingerprint
        self.catalogue = Catalogue(index, metadata.ids, metadata.paths, metadata.labels)
        serve = dict(metadata.extra.get(SERVE_KEY) or {})
        self.generation = str(serve.get("generation") or content_generation(metadata))
        previous = serve.get("previous")
        self.base_seq = int(serve.get("journal_seq", 0))
        header = JournalHeader(self.generation, metadata.dim, self.fingerprint)
        self.journal, contents = Journal.open(self.state_dir / JOURNAL_FILE, header)
        fsync_directory(self.state_dir)
        found = contents.header
        assert found is not None
        if found.base not in (self.generation, previous):
            self.journal.close()
            raise JournalError(
                f"journal {self.journal.path} belongs to another index (generation {found.base}, "
                f"the index at {self.index_dir} is {self.generation}); move the state folder "
                f"{self.state_dir} away to serve the index alone"
            )
        if found.dim != metadata.dim or (
            found.fingerprint and self.fingerprint and found.fingerprint != self.fingerprint
        ):
            self.journal.close()
            raise JournalError(
                f"journal {self.journal.path} holds {found.dim}-d vectors of model "
                f"{found.fingerprint}, the index {metadata.dim}-d of {self.fingerprint}"
            )
        self.transactions = [t for t in contents.transactions if t.seq > self.base_seq]
        for transaction in self.transactions:
            self.apply(self.catalogue, transaction)
        if found.base != self.generation:  # killed between compaction's swap and journal reset
            self.journal.rewrite(header, self.transactions)
        last = self.transactions[-1].seq if self.transactions else 0
        self.next_seq = max(self.base_seq, last) + 1
        if contents.torn_bytes:
            logger.warning(
                "journal %s ended in a torn write of %d bytes (an unacknowledged request); cut off",
                self.journal.path,
                contents.torn_bytes,
            )
        self.remove_unreferenced_images()
        logger.info(
            "catalogue %s: %d items (%d replayed journal transactions)",
            self.index_dir,
            self.catalogue.size,
            len(self.transactions),
        )

    @property
    def index(self) -> Index:
        return self.catalogue.index

    @property
    def dim(self) -> int:
        return self.metadata.dim

    @property
    def metric(self) -> str:
        return self.metadata.metric

    @property
    def threshold(self) -> float | None:
        """The rejection threshold stored with the index."""
        return self.metadata.threshold

    def size(self) -> int:
        with self.lock:
            return self.catalogue.size

    def __contains__(self, item_id: object) -> bool:
        with self.lock:
            return item_id in self.catalogue

    def item(self, item_id: str) -> tuple[str | None, Path | None]:
        """The label and image file of a live item (KeyError when there is none)."""
        with self.lock:
            label = self.catalogue.label_of(item_id)
            path = self.catalogue.path_of(item_id)
        return label, (self.resolve_image(path) if path else None)

    def label_names(self) -> list[str]:
        with self.lock:
            return self.catalogue.label_names()

    def list_items(self, offset: int, limit: int) -> tuple[int, list[tuple[str, str | None, bool]]]:
        """The live items ``offset .. offset + limit`` in row order: total count, and
        ``(id, label, has image)`` of each."""
        with self.lock:
            rows = sorted(self.catalogue.row_of.values())
            chosen = rows[offset : offset + limit]
            catalogue = self.catalogue
            return len(rows), [
                (catalogue.ids[row], catalogue.labels[row], bool(catalogue.paths[row]))
                for row in chosen
            ]

    def vectors_of(self, item_ids: Sequence[str]) -> np.ndarray:
        """Stored vectors of live items (KeyError for an unknown id)."""
        with self.lock:
            return self.catalogue.vectors_of(item_ids)

    def search(
        self,
        queries: np.ndarray,
        k: int,
        label: str | None = None,
        exclude_ids: Sequence[str | None] | None = None,
    ) -> tuple[SearchResult, list[list[Neighbour]]]:
        """See :meth:`Catalogue.search`."""
        with self.lock:
            return self.catalogue.search(queries, k, label, exclude_ids)

    def add(self, items: Sequence[NewItem]) -> int:
        """Add items durably; returns the transaction's sequence number.

        Raises:
            KeyError: An id is already in the catalogue, or repeats within ``items`` (nothing
                is written then).
            ValueError: A vector has the wrong shape or is not finite.
            ReadOnlyCatalogue: The index cannot take changes.
        """
        self._check_writable()
        ids = [item.id for item in items]
        repeated = sorted({i for i in ids if ids.count(i) > 1})
        if repeated:
            raise KeyError(f"ids repeated in one request: {', '.join(map(repr, repeated))}")
        vectors = np.stack([np.asarray(item.vector, np.float32).reshape(-1) for item in items])
        if vectors.shape[1] != self.dim or not np.isfinite(vectors).all():
            raise ValueError(f"vectors must be finite and {self.dim}-d, got {vectors.shape[1]}-d")
        with self.lock:
            present = [item_id for item_id in ids if item_id in self.catalogue]
            if present:
                raise KeyError(
                    f"already in the catalogue: {', '.join(map(repr, present))}; delete first"
                )
            seq = self.next_seq
            operations = []
            for number, item in enumerate(items):
                image = None
                if item.image is not None:
                    image = f"{IMAGES_DIR}/{seq:012d}-{number:03d}{item.suffix}"
                    write_durably(self.state_dir / image, item.image)
                operations.append(Operation("add", item.id, item.label, image, vectors[number]))
            if any(item.image is not None for item in items):
                fsync_directory(self.images_dir)
            try:
                self._commit(Transaction(seq, tuple(operations)))
            except BaseException:
                for operation in operations:  # the images of a change that did not happen
                    if operation.image:
                        (self.state_dir / operation.image).unlink(missing_ok=True)
                raise
        return seq

    def delete(self, item_ids: Sequence[str]) -> int:
        """Delete items durably; returns the transaction's sequence number.

        Raises:
            KeyError: An id is not in the catalogue (nothing is written then).
            ReadOnlyCatalogue: The index cannot take changes.
        """
        self._check_writable()
        ids = list(dict.fromkeys(item_ids))
        with self.lock:
            missing = [item_id for item_id in ids if item_id not in self.catalogue]
            if missing:
                raise KeyError(f"not in the catalogue: {', '.join(map(repr, missing))}")
            seq = self.next_seq
            self._commit(Transaction(seq, tuple(Operation("delete", i) for i in ids)))
        return seq

    def _commit(self, transaction: Transaction) -> None:
        """Journal ``transaction`` durably, then apply it (under the lock). Should applying it
        fail (the index refused the rows, a Milvus server went away), its journal line is cut
        off again: a journaled change that was never applied would be replayed at the next
        start, or fail it."""
        offset = self.journal.append(transaction)
        try:
            self.apply(self.catalogue, transaction)
        except BaseException:
            self.journal.truncate(offset)
            raise
        self.next_seq = transaction.seq + 1
        self.transactions.append(transaction)

    def _check_writable(self) -> None:
        """Refuse a change before anything is journaled when the index cannot take it (a
        journaled change that cannot be applied would fail every restart)."""
        if self.catalogue.index.read_only:
            raise ReadOnlyCatalogue(
                f"the index at {self.index_dir} was loaded memory-mapped (mmap=true) and is "
                "read-only; rebuild it without mmap to add or delete items"
            )

    def needs_compaction(self) -> bool:
        """Whether the journal has grown past ``compact_every`` transactions."""
        return self.compact_every > 0 and len(self.transactions) >= self.compact_every

    @property
    def compacting(self) -> bool:
        return self.compaction_lock.locked()

    def compact(self) -> CompactionReport:
        """Write the live rows as a new index folder, then reset the journal.

        The lock is held only to copy the live rows and to swap the new state in: searches and
        changes go on while the folder is written (:func:`~lookalike.serve.compaction.
        write_compacted`), and changes made meanwhile are replayed onto the new state from the
        journal's transactions in memory. One compaction runs at a time; a second call waits.
        """
        self._check_writable()
        with self.compaction_lock:
            with self.lock:
                seq = self.next_seq - 1
                live = self.catalogue.live_rows()
                dropped = self.catalogue.dead_count
                empty = self.catalogue.index.empty_copy()
                previous = self.generation
            folder = write_compacted(empty, live, self.index_dir, self.metadata, previous, seq,
                                     self.fingerprint, self.resolve_image)  # fmt: skip
            with self.lock:
                catalogue = Catalogue(folder.index, folder.ids, folder.paths, folder.labels)
                kept = [t for t in self.transactions if t.seq > seq]
                for transaction in kept:
                    self.apply(catalogue, transaction)
                self.catalogue, self.metadata = catalogue, folder.metadata
                self.generation, self.base_seq, self.transactions = folder.generation, seq, kept
                header = JournalHeader(folder.generation, self.dim, self.fingerprint)
                self.journal.rewrite(header, kept)
                self.remove_unreferenced_images()
        logger.info(
            "compacted %s: %d rows, %d deleted rows dropped, journal reset after sequence %d",
            self.index_dir, len(live.ids), dropped, seq,
        )  # fmt: skip
        return CompactionReport(len(live.ids), dropped, seq, folder.generation, len(kept))

    def close(self) -> None:
        """Close the journal and let another server open the state folder."""
        with self.lock:
            self.journal.close()
            self._lock_file.close()

    def info(self) -> dict[str, Any]:
        """Facts about the catalogue for ``/api/info``."""
        with self.lock:
            return {
                "items": self.catalogue.size,
                "rows": self.catalogue.index.ntotal,
                "deleted_rows": self.catalogue.dead_count,
                "dim": self.dim,
                "metric": self.metric,
                "index_kind": self.metadata.kind,
                "read_only": self.catalogue.index.read_only,
                "threshold": self.threshold,
                "fingerprint": self.fingerprint,
                "journal_transactions": len(self.transactions),
                "generation": self.generation,
            }

    def apply(self, catalogue: Catalogue, transaction: Transaction) -> None:
        """Apply one journal transaction to ``catalogue`` (adds in one call, then deletes)."""
        adds = [op for op in transaction.operations if op.op == "add"]
        if adds:
            clash = [op.id for op in adds if op.id in catalogue]
            if clash:
                raise JournalError(
                    f"journal {self.journal.path} transaction {transaction.seq} adds "
                    f"{clash[0]!r}, which is already in the catalogue; the journal does not "
                    "belong to this index folder"
                )
            catalogue.add(
                [op.id for op in adds],
                np.stack([np.asarray(op.vector, np.float32) for op in adds]),
                [str(self.state_dir / op.image) if op.image else "" for op in adds],
                [op.label for op in adds],
            )
        deletes = [op.id for op in transaction.operations if op.op == "delete"]
        if deletes:
            catalogue.delete(deletes)

    def resolve_image(self, path: str) -> Path:
        """An image path of the records, absolute (a relative one is read as ``embed`` wrote it:
        from the working directory)."""
        return Path(path).absolute()

    def remove_unreferenced_images(self) -> None:
        """Delete image files of the state folder that no live item shows.

        Called with no change in flight (at start, and under the lock after compaction), so a
        file being written is never taken for an orphan. An image of an item deleted since the
        last compaction goes too: replaying the journal adds then deletes that item again.
        """
        live = {
            os.path.normpath(self.resolve_image(self.catalogue.paths[row]))
            for row in self.catalogue.row_of.values()
            if self.catalogue.paths[row]
        }
        for path in self.images_dir.iterdir():
            if os.path.normpath(path) not in live:
                path.unlink(missing_ok=True)
