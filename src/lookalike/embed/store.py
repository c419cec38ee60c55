"""Embedding files: ``(N, D)`` float32 rows with the ids, paths and labels of their images.

A folder holds one :class:`EmbeddingSet`::

    embeddings.npy   (N, D) float32, L2-normalised when the embedder normalises
    records.parquet  columns id, path, label (row i describes embeddings[i])
    info.json        dimension, count, embedder fingerprint and config, preprocessing, skipped images
    skipped.csv      (written by extraction) id, path, reason of every unreadable image
    shards/          (written by extraction) the finished shards, reused by a re-run
    manifest.json    kind "embeddings", size and SHA-256 of every file above, the fingerprint;
                     written last

The folder is built beside its target and swapped in whole (:mod:`lookalike.utils.folders`), so a
kill leaves the old folder or the new one. :meth:`EmbeddingSet.load` verifies the manifest before
parsing anything, then refuses rows that are NaN or infinite.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lookalike.data.records import ImageRecord, ImageSet
from lookalike.utils.folders import (
    MANIFEST_FILE,
    ArtefactError,
    atomic_folder,
    check_replaceable,
    read_manifest,
    verify_folder,
    write_manifest,
)
from lookalike.utils.readers import read_json_object, read_matrix, read_records
from lookalike.utils.vectors import check_vectors

EMBEDDINGS_FILE = "embeddings.npy"
RECORDS_FILE = "records.parquet"
INFO_FILE = "info.json"
EMBEDDINGS_KIND = "embeddings"
_RERUN = "rerun `lookalike embed` to rewrite the folder"


def is_embedding_folder(path: str | Path) -> bool:
    """Whether ``path`` is (or was meant to be) an embedding folder rather than images.

    True when it holds one of the embedding files, or a manifest of kind "embeddings"; a damaged
    embedding folder is still recognised, so that it is refused rather than read as images.
    """
    path = Path(path)
    if not path.is_dir():
        return False
    if any((path / name).exists() for name in (EMBEDDINGS_FILE, RECORDS_FILE, INFO_FILE)):
        return True
    if not (path / MANIFEST_FILE).is_file():
        return False
    try:
        return read_manifest(path).kind == EMBEDDINGS_KIND
    except ArtefactError:
        return True


@dataclass
class EmbeddingSet:
    """Embeddings of an image set, row-aligned with its records.

    Attributes:
        embeddings: ``(N, D)`` float32.
        ids: ``N`` image ids.
        paths: ``N`` image paths (as strings).
        labels: ``N`` labels, ``None`` where unknown.
        info: Provenance: ``fingerprint`` of the embedder, its ``config``, ``preprocessing``,
            ``skipped`` images ``[{"path": ..., "reason": ...}]`` and anything else worth keeping.
    """

    embeddings: np.ndarray
    ids: list[str]
    paths: list[str]
    labels: list[str | None]
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.embeddings = np.ascontiguousarray(self.embeddings, dtype=np.float32)
        if self.embeddings.ndim != 2:
            raise ValueError(f"embeddings must be (N, D), got shape {self.embeddings.shape}")
        n = self.embeddings.shape[0]
        if not len(self.ids) == len(self.paths) == len(self.labels) == n:
            raise ValueError(
                f"{n} embeddings but {len(self.ids)} ids, {len(self.paths)} paths, "
                f"{len(self.labels)} labels"
            )

    def __len__(self) -> int:
        return int(self.embeddings.shape[0])

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])

    @property
    def is_labelled(self) -> bool:
        return len(self) > 0 and all(label is not None for label in self.labels)

    @property
    def fingerprint(self) -> str | None:
        """The fingerprint of the embedder that made these rows, when known."""
        return self.info.get("fingerprint")

    def to_image_set(self, name: str = "all") -> ImageSet:
        """The records these rows describe (for protocols that split by label)."""
        return ImageSet(
            [
                ImageRecord(id=i, path=Path(p), label=label)
                for i, p, label in zip(self.ids, self.paths, self.labels)
            ],
            name,
        )

    def select(self, indices: np.ndarray | list[int]) -> EmbeddingSet:
        """The rows at ``indices``, in that order."""
        indices = np.asarray(indices, dtype=np.int64)
        return EmbeddingSet(
            self.embeddings[indices],
            [self.ids[i] for i in indices],
            [self.paths[i] for i in indices],
            [self.labels[i] for i in indices],
            dict(self.info),
        )

    def save(self, folder: str | Path) -> Path:
        """Write the set to ``folder``, swapped in whole with its manifest; returns the folder.

        Raises:
            ArtefactError: ``folder`` holds something other than an embedding folder.
        """
        folder = Path(folder)
        check_replaceable(folder, EMBEDDINGS_KIND, (INFO_FILE, EMBEDDINGS_FILE))
        with atomic_folder(folder) as build:
            self.write_files(build)
            self.write_manifest(build)
        return folder

    def write_files(self, folder: Path) -> None:
        """Write ``embeddings.npy``, ``records.parquet`` and ``info.json`` into ``folder`` (a
        folder being built; its manifest comes after)."""
        with open(folder / EMBEDDINGS_FILE, "wb") as handle:
            np.save(handle, self.embeddings)
        frame = pd.DataFrame({"id": self.ids, "path": self.paths, "label": self.labels})
        frame.to_parquet(folder / RECORDS_FILE, index=False)
        info = {**self.info, "count": len(self), "dim": self.dim}
        (folder / INFO_FILE).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")

    def write_manifest(self, folder: Path) -> None:
        """Finish ``folder``: its manifest, with the fingerprint, count and dimension."""
        write_manifest(
            folder, EMBEDDINGS_KIND, self.fingerprint, {"count": len(self), "dim": self.dim}
        )

    @classmethod
    def load(cls, folder: str | Path) -> EmbeddingSet:
        """Read a folder written by :meth:`save` (or extraction), verified against its manifest.

        Raises:
            FileNotFoundError: ``folder`` does not exist.
            ArtefactError: The folder is unfinished, damaged or inconsistent, or a row holds NaN
                or an infinity (the message names the file).
        """
        folder = Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(
                f"embedding folder {folder} does not exist; run `lookalike embed` to create it"
            )
        manifest = verify_folder(folder, EMBEDDINGS_KIND)
        embeddings = read_matrix(folder / EMBEDDINGS_FILE, _RERUN)
        frame = read_records(folder / RECORDS_FILE, _RERUN)
        info = read_json_object(folder / INFO_FILE, _RERUN)
        expected = (
            manifest.extra.get("count", embeddings.shape[0]),
            manifest.extra.get("dim", embeddings.shape[1]),
        )
        for name, found in (
            (EMBEDDINGS_FILE, embeddings.shape),
            (RECORDS_FILE, (len(frame), expected[1])),
            (INFO_FILE, (info.get("count"), info.get("dim"))),
        ):
            if tuple(found) != expected:
                raise ArtefactError(
                    f"{folder / name} describes {found[0]} rows of dimension {found[1]} but the "
                    f"folder holds {expected[0]} of dimension {expected[1]}; {_RERUN}"
                )
        check_vectors(embeddings, str(folder / EMBEDDINGS_FILE))
        labels = [None if pd.isna(v) else str(v) for v in frame["label"].tolist()]
        return cls(
            embeddings,
            [str(v) for v in frame["id"].tolist()],
            [str(v) for v in frame["path"].tolist()],
            labels,
            info,
        )
