"""Index folders: a built index with the ids, paths and labels of its rows.

A folder holds::

    index.faiss | vectors.npy   the index state (FAISS file; exact_torch keeps its rows as .npy)
    records.parquet             columns id, path, label (row i of the index is image ids[i])
    index.json                  kind, params, metric, dim, ntotal, embedder fingerprint, extra
    manifest.json               kind "index", size and SHA-256 of the files above, the
                                fingerprint; written last

The folder is built beside its target and swapped in whole (:mod:`lookalike.utils.folders`), so
a kill during a rebuild leaves the old index or the new one, never the new index beside the old
records. Readers verify the manifest before parsing anything, and every parse error is one line
naming the file. The embedder fingerprint guards against querying an index with embeddings of
another model.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from lookalike.index.base import INDEXES, Index, create_index
from lookalike.index.devices import check_index_device
from lookalike.index.metrics import get_metric
from lookalike.utils.folders import (
    ArtefactError,
    atomic_folder,
    check_replaceable,
    link_verified_files,
    unreadable,
    verify_folder,
    write_manifest,
)
from lookalike.utils.readers import read_json_object, read_records

logger = logging.getLogger(__name__)

METADATA_FILE = "index.json"
RECORDS_FILE = "records.parquet"
FORMAT_VERSION = 1
INDEX_KIND = "index"
_REBUILD = "rebuild the index with `lookalike index`"


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
    """Write ``index`` and its row records to ``folder``, swapped in whole (manifest last).

    Args:
        index: A built index (GPU FAISS indexes are copied to the CPU for writing).
        folder: Output folder: new, empty, or an index folder (replaced).
        ids: ``ntotal`` image ids, row by row.
        paths: ``ntotal`` image paths (empty strings when omitted).
        labels: ``ntotal`` labels (``None`` when omitted).
        fingerprint: Fingerprint of the embedder that made the rows.
        extra: JSON-serialisable extras, e.g. ``{"threshold": 0.42}``.

    Returns:
        The folder.

    Raises:
        ValueError: The records do not match the index's rows, or ``folder`` holds something
            other than an index.
        TypeError: ``extra`` is not JSON-serialisable.
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
    check_replaceable(folder, INDEX_KIND, (METADATA_FILE,))
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
    with atomic_folder(folder) as build:
        index.write_state(build / index.state_file)
        frame = pd.DataFrame(
            {"id": [str(i) for i in ids], "path": paths, "label": pd.Series(labels, dtype=object)}
        )
        frame.to_parquet(build / RECORDS_FILE, index=False)
        _write_metadata(build, metadata)
    logger.info("saved %s index with %d rows to %s", index.kind, count, folder)
    return folder


def _write_metadata(build: Path, metadata: dict[str, Any]) -> None:
    """Write ``index.json`` and then the manifest of the folder being built."""
    (build / METADATA_FILE).write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n")
    facts = {key: metadata[key] for key in ("kind", "metric", "dim", "ntotal")}
    write_manifest(build, INDEX_KIND, metadata.get("fingerprint"), facts)


def load_index(
    folder: str | Path, expected_fingerprint: str | None = None, device: str = "cpu"
) -> tuple[Index, IndexMetadata]:
    """Read an index folder written by :func:`save_index`, verified against its manifest.

    Args:
        folder: The folder.
        expected_fingerprint: Fingerprint of the embedder about to query the index; a mismatch
            with the stored one raises.
        device: Where to put the index: "cpu", "cuda[:N]", or "auto" (a GPU where this index
            runs on one here, see :func:`~lookalike.index.devices.resolve_index_device`).

    Returns:
        The index and its :class:`IndexMetadata`.

    Raises:
        FileNotFoundError: The folder does not exist.
        ValueError: The fingerprints differ; or (an ``ArtefactError``) the folder is unfinished,
            damaged, or its files disagree with each other (the message names the file).
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
    if stored.get("kind") in INDEXES:  # an unknown kind is reported below, naming the file
        device = check_index_device(device, str(stored["kind"]))
    try:
        index = create_index(
            stored["kind"], stored["dim"], stored["metric"], device=device, **stored["params"]
        )
    except (TypeError, ValueError) as error:
        raise unreadable(folder / METADATA_FILE, error, _REBUILD) from None
    state_path = folder / stored["state_file"]
    try:
        index.read_state(state_path)
    except (RuntimeError, OSError, EOFError) as error:  # an index kind's own reader failing
        raise unreadable(state_path, error, _REBUILD) from None
    frame = read_records(folder / RECORDS_FILE, _REBUILD)
    if not index.ntotal == len(frame) == stored["ntotal"]:
        raise ArtefactError(
            f"index folder {folder} is inconsistent: {index.ntotal} index rows, {len(frame)} "
            f"records, index.json says {stored['ntotal']}; {_REBUILD}"
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

    ``search`` and ``evaluate`` then apply it by default. The folder is verified, then rebuilt
    beside itself (the index and records linked, not copied) with the new ``index.json`` and
    manifest, and swapped in whole.

    Raises:
        ValueError: ``threshold`` is not finite, or the folder is not a sound index folder.
    """
    if threshold is not None and not math.isfinite(threshold):
        raise ValueError(f"the threshold must be a finite number, got {threshold}")
    folder = Path(folder)
    metadata = check_index_folder(folder)
    extra = metadata.get("extra") or {}
    metadata["extra"] = {**extra, "threshold": None if threshold is None else float(threshold)}
    with atomic_folder(folder) as build:
        link_verified_files(folder, build)
        (build / METADATA_FILE).unlink(missing_ok=True)
        _write_metadata(build, metadata)
    return folder


def read_index_metadata(folder: str | Path) -> dict[str, Any]:
    """The raw ``index.json`` of an index folder, after verifying the folder's manifest.

    Raises:
        FileNotFoundError: The folder does not exist.
        ArtefactError: The folder is unfinished or damaged, or ``index.json`` is not a JSON
            object (one line naming the file).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"index folder {folder} does not exist; run `lookalike index` to create it"
        )
    verify_folder(folder, INDEX_KIND)
    return read_json_object(folder / METADATA_FILE, _REBUILD)


def check_index_folder(folder: str | Path) -> dict[str, Any]:
    """The ``index.json`` of a sound index folder: verified, with every field checked.

    Cheap enough to run before work whose outputs belong with the index (a tuned threshold).

    Raises:
        FileNotFoundError: The folder does not exist.
        ArtefactError: The folder is unfinished or damaged, or ``index.json`` lacks a field or
            holds a wrong one (one line naming the file).
    """
    folder = Path(folder)
    stored = read_index_metadata(folder)
    path = folder / METADATA_FILE
    required = ("kind", "params", "metric", "dim", "ntotal", "state_file")
    absent = [key for key in required if key not in stored]
    if absent:
        raise ArtefactError(f"{path} lacks {', '.join(absent)}; {_REBUILD}")
    problem = None
    if stored["kind"] not in INDEXES.names():
        problem = f"unknown index kind {stored['kind']!r}"
    elif not isinstance(stored["params"], dict):
        problem = f"params must be an object, got {stored['params']!r}"
    elif not _count(stored["dim"]) or stored["dim"] < 1:
        problem = f"dim must be a positive integer, got {stored['dim']!r}"
    elif not _count(stored["ntotal"]):
        problem = f"ntotal must be a non-negative integer, got {stored['ntotal']!r}"
    elif stored["state_file"] != INDEXES.get(stored["kind"]).state_file:  # type: ignore[attr-defined]
        problem = f"state_file {stored['state_file']!r} is not the {stored['kind']} index's"
    elif not isinstance(stored.get("extra") or {}, dict):
        problem = f"extra must be an object, got {stored['extra']!r}"
    elif not _threshold(stored.get("extra") or {}):
        threshold = stored["extra"]["threshold"]
        problem = f"the threshold must be a finite number or null, got {threshold!r}"
    else:
        try:
            get_metric(str(stored["metric"]))
        except ValueError as error:
            problem = str(error)
    if problem is not None:
        raise ArtefactError(f"{path}: {problem}; {_REBUILD}")
    return stored


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _threshold(extra: dict[str, Any]) -> bool:
    value = extra.get("threshold")
    if value is None:
        return True
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
