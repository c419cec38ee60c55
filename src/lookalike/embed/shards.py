"""Resumable extraction: an image set cut into shards, each saved atomically as it finishes.

::

    shards/shard_00000.npz   embeddings, rows, skipped rows of the images [start, stop)
    skipped.csv              id, path, reason of every image that could not be read

Shards cover the image set from its first image on, one after another. A shard is made of whole
batches and closes once it holds ``shard_size`` images or has taken ``shard_seconds`` of work,
so a killed job loses about a minute at most, however large its shards. Batches are cut from the
resume point on, so every batch (and every embedding) is the one an uninterrupted run computes.

A shard file is tagged with the embedder fingerprint, the test-time augmentation, the autocast
dtype, its first row and the ids and absolute paths of its images, so a stale shard is never
reused (ids alone are not enough: a folder source's ids are paths relative to its root, the same
for two copies of a dataset); the longest run of reusable shards from the first image on is kept,
and the finished shards are assembled, in order, into one :class:`EmbeddingSet`.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lookalike.data.records import ImageSet
from lookalike.embed.store import EmbeddingSet
from lookalike.utils.atomic import atomic_path, atomic_write_text

logger = logging.getLogger(__name__)

SHARDS_DIR = "shards"
SKIPPED_FILE = "skipped.csv"


@dataclass
class Shard:
    """The result for the images ``[start, stop)``: ``embeddings`` ``(n, D)`` of dataset ``rows``
    ``(n,)``, and the ``(row, reason)`` of each image in the shard that could not be read."""

    start: int
    stop: int
    embeddings: np.ndarray
    rows: np.ndarray
    skipped: list[tuple[int, str]]


def check_shard_settings(batch_size: int, shard_size: int, shard_seconds: float) -> None:
    """Refuse batching every engine would run wrongly with (NaN ``shard_seconds`` too)."""
    if batch_size < 1 or shard_size < 1 or not shard_seconds > 0:
        raise ValueError(
            f"need batch_size >= 1, shard_size >= 1, shard_seconds > 0; got "
            f"{batch_size}, {shard_size}, {shard_seconds}"
        )


def batches_from(start: int, size: int, batch_size: int) -> list[list[int]]:
    """Batches of dataset indices ``[start, size)``, ``batch_size`` at most each, in order."""
    return [list(range(i, min(i + batch_size, size))) for i in range(start, size, batch_size)]


def absolute_paths(image_set: ImageSet) -> list[str]:
    """The absolute path of every image of ``image_set``, as shards record them."""
    return [os.path.abspath(path) for path in image_set.paths]


@dataclass(frozen=True)
class ShardFiles:
    """``shard_dir/shard_00000.npz`` ...: one atomic file per finished shard, tagged with the
    embedder fingerprint, the TTA, the autocast dtype, its first row and the ids and paths of its
    images so a stale shard is never reused.

    Attributes:
        shard_dir: The folder of the shard files.
        fingerprint: The embedder's fingerprint.
        tta: The test-time augmentation names.
        amp: The autocast dtype's name (``"bfloat16"``), ``None`` for full precision.
        paths: The absolute path of every image of the set (:func:`absolute_paths`), in order.
    """

    shard_dir: Path
    fingerprint: str
    tta: list[str]
    amp: str | None
    paths: list[str]

    def path(self, number: int) -> Path:
        """The file of shard ``number``."""
        return self.shard_dir / f"shard_{number:05d}.npz"

    def save(self, number: int, shard: Shard, ids: list[str]) -> None:
        """Write shard ``number``, made of the images ``ids``, atomically."""
        with atomic_path(self.path(number)) as tmp, open(tmp, "wb") as handle:
            np.savez(
                handle,
                start=np.array(shard.start, dtype=np.int64),
                embeddings=shard.embeddings.astype(np.float32),
                rows=shard.rows.astype(np.int64),
                skipped_rows=np.array([row for row, _ in shard.skipped], dtype=np.int64),
                skipped_reasons=np.array([reason for _, reason in shard.skipped], dtype=str),
                ids=np.array(ids, dtype=str),
                paths=np.array(self.paths[shard.start : shard.stop], dtype=str),
                fingerprint=np.array(self.fingerprint),
                tta=np.array(json.dumps(self.tta)),
                amp=np.array(json.dumps(self.amp)),
            )

    def load_finished(self, ids: list[str]) -> list[Shard]:
        """The reusable shards from the first image on, in order; later files are removed.

        Args:
            ids: The ids of every image of the set, in order.
        """
        shards: list[Shard] = []
        start = 0
        while start < len(ids):
            shard = self.load(len(shards), start, ids)
            if shard is None:
                break
            shards.append(shard)
            start = shard.stop
        # By name, not by sorted position: shard_100000 sorts before shard_10001.
        kept = {self.path(number) for number in range(len(shards))}
        for path in self.shard_dir.glob("shard_*.npz"):
            if path not in kept:
                path.unlink()
        if shards:
            logger.info("resuming: %d of %d images done in %d shards", start, len(ids), len(shards))
        return shards

    def load(self, number: int, start: int, ids: list[str]) -> Shard | None:
        """Shard ``number`` when its file is complete and was made, from image ``start`` on, for
        the images ``ids[start:...]`` at these paths by this embedder with this TTA and autocast
        dtype; otherwise ``None``, with a warning saying why when a file was there."""
        path = self.path(number)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                recorded = {name: data[name] for name in data.files}
            if "paths" not in recorded or "amp" not in recorded:
                logger.warning("shard %s predates path and precision records; recomputing it",
                               path)  # fmt: skip
                return None
            skipped = zip(recorded["skipped_rows"].tolist(), recorded["skipped_reasons"].tolist())
            shard_ids = [str(value) for value in recorded["ids"].tolist()]
            shard_paths = [str(value) for value in recorded["paths"].tolist()]
            shard = Shard(
                int(recorded["start"]),
                int(recorded["start"]) + len(shard_ids),
                recorded["embeddings"],
                recorded["rows"],
                list(skipped),
            )
            made_with = (
                str(recorded["fingerprint"]),
                json.loads(str(recorded["tta"])),
                json.loads(str(recorded["amp"])),
            )
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
            logger.warning("shard %s is unreadable (%s); recomputing it", path, error)
            return None
        problem = None
        if made_with != (self.fingerprint, self.tta, self.amp):
            problem = f"made by embedder {made_with[0]} with tta {made_with[1]}, amp {made_with[2]}"
        elif shard.start != start or not shard_ids or shard_ids != ids[start : shard.stop]:
            problem = "its image ids differ from the image set's"
        elif shard_paths != self.paths[start : shard.stop]:
            problem = "its image paths differ from the image set's"
        elif not len(shard.rows) == len(shard.embeddings) == len(shard_ids) - len(shard.skipped):
            problem = "its row counts are inconsistent"
        elif any(not start <= row < shard.stop for row in shard.rows.tolist()):
            problem = "its rows lie outside its images"
        if problem is not None:
            logger.warning("shard %s does not match this run (%s); recomputing it", path, problem)
            return None
        return shard


def assemble_shards(
    image_set: ImageSet, shards: list[Shard], dim: int, info: dict[str, Any]
) -> EmbeddingSet:
    """Concatenate the shards in order into the set's rows; ``info`` gains counts and skipped."""
    rows = np.concatenate([s.rows for s in shards] or [np.zeros(0, np.int64)])
    embeddings = np.concatenate([s.embeddings for s in shards] or [np.zeros((0, dim), np.float32)])
    records = [image_set[int(row)] for row in rows]
    skipped = [
        {"id": image_set[row].id, "path": str(image_set[row].path), "reason": reason}
        for s in shards
        for row, reason in s.skipped
    ]
    counts = {"images": len(image_set), "embedded": len(records), "skipped": len(skipped)}
    if skipped:
        logger.warning("skipped %d of %d unreadable images", len(skipped), len(image_set))
    logger.info("embedded %d of %d images of %s", len(records), len(image_set), image_set.name)
    return EmbeddingSet(
        embeddings,
        [record.id for record in records],
        [str(record.path) for record in records],
        [record.label for record in records],
        {**info, "counts": counts, "skipped": skipped},
    )


def read_skipped_csv(path: Path) -> list[dict[str, str]]:
    """The ``id,path,reason`` rows of a ``skipped.csv``; a ValueError names a malformed file."""
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            rows = [dict(row) for row in reader]
            columns = reader.fieldnames or []
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise ValueError(f"{path} is not a readable CSV file ({error}); rewrite or remove it") from error
    if not {"id", "path", "reason"} <= set(columns):
        raise ValueError(f"{path} must have the columns id, path, reason")
    return rows


def write_skipped_csv(path: Path, skipped: list[dict[str, str]]) -> None:
    """``id,path,reason`` of every skipped image, written atomically."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["id", "path", "reason"])
    writer.writeheader()
    writer.writerows(skipped)
    atomic_write_text(path, buffer.getvalue())
