"""Embedding files: ``(N, D)`` float32 rows with the ids, paths and labels of their images.

A folder holds one :class:`EmbeddingSet`::

    embeddings.npy   (N, D) float32, L2-normalised when the embedder normalises
    records.parquet  columns id, path, label (row i describes embeddings[i])
    info.json        dimension, count, embedder fingerprint and config, preprocessing, skipped images

Every file is written atomically, ``info.json`` last, so a folder with ``info.json`` is complete.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lookalike.data.records import ImageRecord, ImageSet
from lookalike.utils.atomic import atomic_path, atomic_write_json

EMBEDDINGS_FILE = "embeddings.npy"
RECORDS_FILE = "records.parquet"
INFO_FILE = "info.json"


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
        """Write the set to ``folder`` atomically (``info.json`` last); returns the folder."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(folder / EMBEDDINGS_FILE) as tmp, open(tmp, "wb") as handle:
            np.save(handle, self.embeddings)
        frame = pd.DataFrame({"id": self.ids, "path": self.paths, "label": self.labels})
        with atomic_path(folder / RECORDS_FILE) as tmp:
            frame.to_parquet(tmp, index=False)
        atomic_write_json(folder / INFO_FILE, {**self.info, "count": len(self), "dim": self.dim})
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> EmbeddingSet:
        """Read a set written by :meth:`save`; a clear error if the folder is incomplete."""
        import json

        folder = Path(folder)
        missing = [n for n in (EMBEDDINGS_FILE, RECORDS_FILE, INFO_FILE) if not (folder / n).is_file()]
        if missing:
            raise FileNotFoundError(
                f"{folder} is not a complete embedding folder (missing {', '.join(missing)}); "
                "run `lookalike embed` to create it"
            )
        embeddings = np.load(folder / EMBEDDINGS_FILE)
        frame = pd.read_parquet(folder / RECORDS_FILE)
        labels = [None if pd.isna(v) else str(v) for v in frame["label"].tolist()]
        info = json.loads((folder / INFO_FILE).read_text())
        return cls(
            embeddings,
            [str(v) for v in frame["id"].tolist()],
            [str(v) for v in frame["path"].tolist()],
            labels,
            info,
        )
