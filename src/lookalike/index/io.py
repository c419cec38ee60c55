"""Index folders: a built index with the ids, paths and labels of its rows.

A folder holds::

    index.faiss | vectors.npy   the index state (FAISS file; exact_torch keeps its rows as .npy)
    records.parquet             columns id, path, label (row i of the index is image ids[i])
    index.json                  kind, params, metric, dim, ntotal, embedder fingerprint, extra

Every file is written atomically, ``index.json`` last, so a folder with ``index.json`` is complete.
The embedder fingerprint guards against querying an index with embeddings of another model.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from lookalike.index.base import Index, create_index
from lookalike.utils.atomic import atomic_path, atomic_write_json

logger = logging.getLogger(__name__)

METADATA_FILE = "index.json"
RECORDS_FILE = "records.parquet"
FORMAT_VERSION = 1


@dataclass
class IndexMetadata:
    """What an index folder says about its index.

    Attributes:
        kind: Registry name of the index ("flat", "hnsw", ...).
        params: The index's own parameters.
        metric: Metric name.
        dim: Embedding width ``D``.
        ntotal: Number of rows.
        ids: ``ntotal`` image ids, row by row.
        paths: ``ntotal`` image paths.
        labels: ``ntotal`` labels, ``None`` where unknown.
        fingerprint: Fingerprint of the embedder that made the rows, when known.
        extra: Anything else kept with the index, e.g. ``{"threshold": 0.42}``.
    """

    kind: str
    params: dict[str, Any]
    metric: str
    dim: int
    ntotal: int
    ids: list[str]
    paths: list[str]
    labels: list[str | None]
    fingerprint: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def threshold(self) -> float | None:
        """The stored rejection threshold (``extra["threshold"]``), if any."""
        value = self.extra.get("threshold")
        return None if value is None else float(value)


def save_index(
    index: Index,
    folder: str | Path,
    ids: Sequence[str],
    paths: Sequence[str] | None = None,
    labels: Sequence[str | None] | None = None,
    fingerprint: str | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``index`` and its row records to ``folder`` atomically (``index.json`` last).

    Args:
        index: A built index (GPU FAISS indexes are copied to the CPU for writing).
        folder: Output folder, created if needed.
        ids: ``ntotal`` image ids, row by row.
        paths: ``ntotal`` image paths (empty strings when omitted).
        labels: ``ntotal`` labels (``None`` when omitted).
        fingerprint: Fingerprint of the embedder that made the rows.
        extra: JSON-serialisable extras, e.g. ``{"threshold": 0.42}``.

    Returns:
        The folder.
    """
    folder = Path(folder)
    count = index.ntotal
    paths = [""] * count if paths is None else [str(p) for p in paths]
    labels = [None] * count if labels is None else [None if v is None else str(v) for v in labels]
    if not len(ids) == len(paths) == len(labels) == count:
        raise ValueError(
            f"index holds {count} rows but got {len(ids)} ids, {len(paths)} paths, "
            f"{len(labels)} labels"
        )
    extra = dict(extra or {})
    json.dumps(extra)  # fail before writing anything if extra is not JSON-serialisable
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / index.state_file) as tmp:
        index.write_state(tmp)
    frame = pd.DataFrame(
        {"id": [str(i) for i in ids], "path": paths, "label": pd.Series(labels, dtype=object)}
    )
    with atomic_path(folder / RECORDS_FILE) as tmp:
        frame.to_parquet(tmp, index=False)
    metadata = {
        "format_version": FORMAT_VERSION,
        "kind": index.kind,
        "params": index.params,
        "metric": index.metric.name,
        "dim": index.dim,
        "ntotal": count,
        "state_file": index.state_file,
        "fingerprint": fingerprint,
        "extra": extra,
    }
    atomic_write_json(folder / METADATA_FILE, metadata)
    logger.info("saved %s index with %d rows to %s", index.kind, count, folder)
    return folder


def load_index(
    folder: str | Path, expected_fingerprint: str | None = None, device: str = "cpu"
) -> tuple[Index, IndexMetadata]:
    """Read an index folder written by :func:`save_index`.

    Args:
        folder: The folder.
        expected_fingerprint: Fingerprint of the embedder about to query the index; a mismatch
            with the stored one raises.
        device: Where to put the index ("cpu", "cuda[:N]").

    Returns:
        The index and its :class:`IndexMetadata`.

    Raises:
        FileNotFoundError: The folder is incomplete.
        ValueError: The fingerprints differ, or the files disagree with each other.
    """
    folder = Path(folder)
    stored = check_index_folder(folder)
    fingerprint = stored.get("fingerprint")
    if expected_fingerprint is not None:
        if fingerprint is None:
            logger.warning(
                "index at %s stores no model fingerprint; cannot check it matches %s",
                folder,
                expected_fingerprint,
            )
        elif fingerprint != expected_fingerprint:
            raise ValueError(
                f"index at {folder} was built with model fingerprint {fingerprint} but the model "
                f"given has {expected_fingerprint}; rebuild the index with `lookalike index`"
            )
    index = create_index(
        stored["kind"], stored["dim"], stored["metric"], device=device, **stored["params"]
    )
    index.read_state(folder / stored["state_file"])
    frame = pd.read_parquet(folder / RECORDS_FILE)
    if not index.ntotal == len(frame) == stored["ntotal"]:
        raise ValueError(
            f"index folder {folder} is inconsistent: {index.ntotal} index rows, {len(frame)} "
            f"records, index.json says {stored['ntotal']}; rebuild it with `lookalike index`"
        )
    metadata = IndexMetadata(
        kind=stored["kind"],
        params=dict(stored["params"]),
        metric=stored["metric"],
        dim=int(stored["dim"]),
        ntotal=int(stored["ntotal"]),
        ids=[str(v) for v in frame["id"].tolist()],
        paths=[str(v) for v in frame["path"].tolist()],
        labels=[None if pd.isna(v) else str(v) for v in frame["label"].tolist()],
        fingerprint=fingerprint,
        extra=dict(stored.get("extra") or {}),
    )
    return index, metadata


def set_index_threshold(folder: str | Path, threshold: float | None) -> Path:
    """Store (or clear, with None) the rejection threshold in an index folder's metadata.

    ``search`` and ``evaluate`` then apply it by default. The metadata file is rewritten
    atomically; the index itself is untouched.
    """
    folder = Path(folder)
    metadata_path = folder / METADATA_FILE
    metadata = read_index_metadata(folder)
    metadata.setdefault("extra", {})["threshold"] = None if threshold is None else float(threshold)
    atomic_write_json(metadata_path, metadata)
    return folder


def read_index_metadata(folder: str | Path) -> dict[str, Any]:
    """The raw ``index.json`` of an index folder; a one-line error when there is none."""
    metadata_path = Path(folder) / METADATA_FILE
    if not metadata_path.is_file():
        raise FileNotFoundError(
            f"{folder} is not a complete index folder (missing {METADATA_FILE}); "
            "run `lookalike index` to create it"
        )
    try:
        return dict(json.loads(metadata_path.read_text()))
    except (TypeError, ValueError) as error:  # not JSON, or JSON but not an object
        raise ValueError(
            f"{metadata_path} is not a JSON object ({error}); rebuild the index with "
            "`lookalike index`"
        ) from None


def check_index_folder(folder: str | Path) -> dict[str, Any]:
    """The raw ``index.json`` of a complete index folder, checked without reading the index.

    Cheap enough to run before work whose outputs belong with the index (a tuned threshold).

    Raises:
        FileNotFoundError: ``index.json``, the index state or the records file is missing.
        ValueError: ``index.json`` is not valid JSON or lacks a field.
    """
    folder = Path(folder)
    stored = read_index_metadata(folder)
    required = ("kind", "params", "metric", "dim", "ntotal", "state_file")
    absent = [key for key in required if key not in stored]
    if absent:
        raise ValueError(
            f"{folder / METADATA_FILE} lacks {', '.join(absent)}; rebuild the index with "
            "`lookalike index`"
        )
    missing = [n for n in (stored["state_file"], RECORDS_FILE) if not (folder / n).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{folder} is not a complete index folder (missing {', '.join(missing)}); "
            "run `lookalike index` to rebuild it"
        )
    return stored
