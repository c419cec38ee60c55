"""The write-ahead journal of a served catalogue: acknowledged additions and deletions, durable.

Every change is one *transaction* (all the items of one request) written as one line and
``fsync``-ed before the server answers, so an acknowledged change survives ``kill -9`` or a power
cut, and is replayed when the server starts again. A line is ``<checksum> <json>\\n`` with a
BLAKE2b checksum of the JSON: a write cut short leaves a last line that is incomplete or fails
its checksum, which is recognised, ignored (that request was never acknowledged) and cut off
before the next append. A damaged line followed by good ones is not a torn write but a damaged
file, and opening it fails with one line saying so.

The first line is a header naming the *generation* of the index folder the transactions apply
to (see :mod:`lookalike.serve.store`), so a journal is never replayed onto another index.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Literal

import numpy as np

from lookalike.utils.atomic import atomic_path
from lookalike.utils.folders import fsync_directory

JOURNAL_FILE = "journal.log"
FORMAT = "lookalike-serve-journal"
FORMAT_VERSION = 1
_DIGEST_BYTES = 8


class JournalError(ValueError):
    """A journal that cannot be trusted (damaged, or written for another index)."""


@dataclass(frozen=True)
class Operation:
    """One change to the catalogue.

    Attributes:
        op: "add" or "delete".
        id: The item.
        label: Its label (add only).
        image: Its image file, relative to the state folder (add only).
        vector: Its ``(D,)`` float32 embedding (add only), stored so replay needs no model.
    """

    op: Literal["add", "delete"]
    id: str
    label: str | None = None
    image: str | None = None
    vector: np.ndarray | None = field(default=None, compare=False)

    def to_json(self) -> dict[str, Any]:
        if self.op == "delete":
            return {"op": "delete", "id": self.id}
        assert self.vector is not None
        encoded = base64.b64encode(np.asarray(self.vector, dtype="<f4").tobytes()).decode("ascii")
        return {"op": "add", "id": self.id, "label": self.label, "image": self.image,
                "vector": encoded}  # fmt: skip

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Operation:
        if data["op"] == "delete":
            return cls("delete", str(data["id"]))
        if data["op"] != "add":
            raise ValueError(f"unknown operation {data['op']!r}")
        vector = np.frombuffer(base64.b64decode(data["vector"]), dtype="<f4").astype(np.float32)
        label = data.get("label")
        image = data.get("image")
        return cls("add", str(data["id"]), None if label is None else str(label),
                   None if image is None else str(image), vector)  # fmt: skip


@dataclass(frozen=True)
class Transaction:
    """The operations of one acknowledged request, numbered in the order they were applied."""

    seq: int
    operations: tuple[Operation, ...]

    def to_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "ops": [operation.to_json() for operation in self.operations]}


@dataclass(frozen=True)
class JournalHeader:
    """The first line: which index generation the journal applies to, and its vectors' shape."""

    base: str
    dim: int
    fingerprint: str | None

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "format_version": FORMAT_VERSION, "base": self.base,
                "dim": self.dim, "fingerprint": self.fingerprint}  # fmt: skip


def encode_line(payload: dict[str, Any]) -> bytes:
    """``<checksum> <json>\\n`` for one record."""
    text = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode("utf-8")
    digest = hashlib.blake2b(text, digest_size=_DIGEST_BYTES).hexdigest().encode("ascii")
    return digest + b" " + text + b"\n"


def decode_line(line: bytes) -> dict[str, Any] | None:
    """The record of a complete line (without its newline), None when its checksum fails."""
    digest, sep, text = line.partition(b" ")
    if not sep or len(digest) != 2 * _DIGEST_BYTES:
        return None
    if hashlib.blake2b(text, digest_size=_DIGEST_BYTES).hexdigest().encode("ascii") != digest:
        return None
    try:
        record = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return record if isinstance(record, dict) else None


@dataclass
class JournalContents:
    """What a journal file holds: its header, its transactions, and where the good data ends."""

    header: JournalHeader | None
    transactions: list[Transaction]
    good_bytes: int
    torn_bytes: int


def read_journal(path: Path) -> JournalContents:
    """Parse a journal file, tolerating a torn tail.

    Raises:
        JournalError: A bad line is followed by good ones, sequence numbers do not increase, or
            the header is not a journal header.
    """
    data = path.read_bytes() if path.is_file() else b""
    header: JournalHeader | None = None
    transactions: list[Transaction] = []
    offset = good_bytes = 0
    bad_line: int | None = None
    number = 0
    while offset < len(data):
        end = data.find(b"\n", offset)
        complete = end >= 0
        line = data[offset : end if complete else len(data)]
        next_offset = end + 1 if complete else len(data)
        number += 1
        record = decode_line(line) if complete else None
        if record is None:
            bad_line = bad_line or number
        else:
            if bad_line is not None:
                raise JournalError(
                    f"journal {path} is damaged at line {bad_line} (a bad record before good "
                    "ones, not a torn last write); restore it from a backup or move it away to "
                    "start from the index folder alone"
                )
            try:
                if header is None:
                    header = _header(record, path)
                else:
                    transaction = Transaction(
                        int(record["seq"]),
                        tuple(Operation.from_json(op) for op in record["ops"]),
                    )
                    if transactions and transaction.seq <= transactions[-1].seq:
                        raise JournalError(
                            f"journal {path} line {number}: sequence {transaction.seq} after "
                            f"{transactions[-1].seq}; the file was edited or damaged"
                        )
                    transactions.append(transaction)
            except (KeyError, TypeError, ValueError) as error:
                if isinstance(error, JournalError):
                    raise
                raise JournalError(
                    f"journal {path} line {number} is not a journal record ({error}); move the "
                    "file away to start from the index folder alone"
                ) from None
            good_bytes = next_offset
        offset = next_offset
    return JournalContents(header, transactions, good_bytes, len(data) - good_bytes)


def _header(record: dict[str, Any], path: Path) -> JournalHeader:
    if record.get("format") != FORMAT or record.get("format_version") != FORMAT_VERSION:
        raise JournalError(
            f"{path} does not start with a lookalike journal header (format "
            f"{record.get('format')!r} version {record.get('format_version')!r})"
        )
    fingerprint = record.get("fingerprint")
    return JournalHeader(str(record["base"]), int(record["dim"]),
                         None if fingerprint is None else str(fingerprint))  # fmt: skip


class Journal:
    """An append-only journal file, open for appending.

    Use :meth:`open` to read an existing journal (cutting off a torn tail) or start a new one.
    """

    def __init__(self, path: Path, header: JournalHeader) -> None:
        self.path = path
        self.header = header
        self._handle: BinaryIO | None = open(path, "ab")  # noqa: SIM115 (kept open)

    @classmethod
    def open(
        cls, path: str | os.PathLike[str], header: JournalHeader
    ) -> tuple[Journal, JournalContents]:
        """Open the journal at ``path``, or create it with ``header`` when there is none.

        A torn tail is cut off first, so the next append starts on a clean line.

        Returns:
            The journal and what it held (``contents.header`` is the file's own header, which
            the caller checks against its index).
        """
        path = Path(path)
        contents = read_journal(path)
        if contents.header is None:
            write_journal(path, header, [])
            contents = JournalContents(header, [], path.stat().st_size, contents.torn_bytes)
        elif contents.torn_bytes:
            with open(path, "r+b") as handle:
                handle.truncate(contents.good_bytes)
                handle.flush()
                os.fsync(handle.fileno())
        assert contents.header is not None
        return cls(path, contents.header), contents

    def append(self, transaction: Transaction) -> int:
        """Write one transaction and ``fsync`` it; on failure nothing of it stays in the file.

        Returns:
            The file's size before the transaction (:meth:`truncate` to it takes it back).
        """
        if self._handle is None:
            raise JournalError(f"journal {self.path} is closed")
        line = encode_line(transaction.to_json())
        size = self._handle.tell()
        try:
            self._handle.write(line)
            self._handle.flush()
            os.fsync(self._handle.fileno())
        except OSError:
            self._handle.truncate(size)
            self._handle.seek(size)  # an append-mode file does not move its position back
            raise
        return size

    def truncate(self, size: int) -> None:
        """Cut the file back to ``size`` bytes (what :meth:`append` returned) and ``fsync`` it:
        the transactions appended since are gone, as if never written."""
        if self._handle is None:
            raise JournalError(f"journal {self.path} is closed")
        self._handle.truncate(size)
        self._handle.seek(size)  # an append-mode file does not move its position back
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def rewrite(self, header: JournalHeader, transactions: list[Transaction]) -> None:
        """Replace the file atomically with ``header`` and ``transactions`` (after compaction).

        Should the new file not be written (a full disk), the old one stays, open for appending.
        """
        self.close()
        try:
            write_journal(self.path, header, transactions)
            self.header = header
        finally:
            self._handle = open(self.path, "ab")  # noqa: SIM115

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def write_journal(path: Path, header: JournalHeader, transactions: list[Transaction]) -> None:
    """Write a whole journal atomically (a reader sees the old file or the new one)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        handle.write(encode_line(header.to_json()))
        handle.writelines(encode_line(transaction.to_json()) for transaction in transactions)
    fsync_directory(path.parent)
