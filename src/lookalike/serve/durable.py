"""Files that survive a crash: ``fsync``-ed writes, ``fsync``-ed folders, one writer at a time.

A write is on disk only once its file is ``fsync``-ed, and a new file or rename is findable
after a power cut only once its folder is ``fsync``-ed too; the server acknowledges a change
only after both.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import BinaryIO


def hold_lock(path: Path) -> BinaryIO:
    """Hold an exclusive lock on ``path`` for as long as the returned file stays open.

    Two servers appending to one journal would interleave their sequence numbers; the second
    is refused instead. The kernel releases the lock when the holder dies, even by ``kill -9``.

    Raises:
        ValueError: Another process holds the lock.
    """
    handle = open(path, "a+b")  # noqa: SIM115 (held open: the lock lasts as long as the file)
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise ValueError(
            f"another server holds {path}; serve a catalogue from one process at a time"
        ) from None
    return handle


def write_durably(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` and ``fsync`` it (the caller ``fsync``-s the folder)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


