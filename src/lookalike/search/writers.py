"""Write rankings to CSV or JSON, with ids and paths instead of row numbers.

CSV: one row per (query, neighbour) with columns ``query_id, rank, gallery_id, gallery_path,
score`` (rank is 1-based). JSON: ``{query_id: [{"rank", "gallery_id", "gallery_path", "score"},
...]}``. Padding (index -1, where fewer than k neighbours exist) is skipped. With a rejection
threshold, a ``"no_match"`` entry (empty path and score) takes its place in each list, as Kaggle's
``new_whale`` does, and every list keeps the result's length ``k``.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lookalike.index.result import SearchResult
from lookalike.search.rejection import (
    check_threshold,
    goodness,
    goodness_level,
    rejection_positions,
)
from lookalike.utils.atomic import atomic_write_text

NO_MATCH_ID = "no_match"
CSV_COLUMNS = ("query_id", "rank", "gallery_id", "gallery_path", "score")
FORMATS = (".csv", ".json")


def ranked_rows(
    result: SearchResult,
    query_ids: Sequence[str],
    gallery_ids: Sequence[str],
    gallery_paths: Sequence[str] | None = None,
    threshold: float | None = None,
) -> list[dict[str, Any]]:
    """One dict per real neighbour (keys of :data:`CSV_COLUMNS`), queries in order, best first.

    With ``threshold`` (in the scores' own sense) a :data:`NO_MATCH_ID` row is inserted before the
    first neighbour that fails it (padding is no neighbour, wherever it sits), and each query
    keeps at most ``k`` rows.

    Raises:
        ValueError: A query id given twice (its rows could not be told apart, and JSON would
            merge them), or ids that do not fit the result.
    """
    if len(query_ids) != len(result):
        raise ValueError(f"{len(query_ids)} query ids for a result of {len(result)} queries")
    seen: set[str] = set()
    for query_id in map(str, query_ids):
        if query_id in seen:
            raise ValueError(
                f"query id {query_id!r} appears more than once; query ids must be unique"
            )
        seen.add(query_id)
    if gallery_paths is not None and len(gallery_paths) != len(gallery_ids):
        raise ValueError(f"{len(gallery_paths)} gallery paths for {len(gallery_ids)} gallery ids")
    if result.indices.size and result.indices.max() >= len(gallery_ids):
        raise ValueError(
            f"result refers to gallery row {int(result.indices.max())} but only "
            f"{len(gallery_ids)} gallery ids were given"
        )
    k = result.indices.shape[1] if result.indices.ndim == 2 else 0
    level = (
        None if threshold is None
        else goodness_level(check_threshold(threshold), result.higher_is_better)
    )
    row_goodness = goodness(result)
    rows = []
    for position, (query_id, scores, indices) in enumerate(
        zip(query_ids, result.scores, result.indices)
    ):
        entries: list[tuple[str, str | None, float | None]] = [
            (
                str(gallery_ids[row]),
                None if gallery_paths is None else str(gallery_paths[row]),
                float(score),
            )
            for score, row in zip(scores.tolist(), indices.tolist())
            if row >= 0
        ]
        if level is not None:
            # the rule of lookalike.search.rejection, over the real neighbours only
            real = row_goodness[position][indices >= 0]
            at = int(rejection_positions(real[None, :], level)[0])
            entries.insert(at, (NO_MATCH_ID, None, None))
        for rank, (gallery_id, gallery_path, score) in enumerate(entries[:k], start=1):
            rows.append(
                {
                    "query_id": str(query_id),
                    "rank": rank,
                    "gallery_id": gallery_id,
                    "gallery_path": gallery_path,
                    "score": score,
                }
            )
    return rows


def results_format(path: str | Path) -> str:
    """The format :func:`write_results` writes to ``path`` (its suffix: ".csv" or ".json").

    Raises:
        ValueError: Any other suffix; call this before the work whose results go to ``path``.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(
            f"cannot write results to {path}: unknown suffix {path.suffix!r}; "
            f"valid suffixes: {', '.join(FORMATS)}"
        )
    return suffix


def write_results(
    result: SearchResult,
    query_ids: Sequence[str],
    gallery_ids: Sequence[str],
    gallery_paths: Sequence[str] | None,
    path: str | Path,
    threshold: float | None = None,
) -> Path:
    """Write ``result`` to ``path`` as CSV or JSON (chosen by suffix), atomically.

    Args:
        result: ``(Q, k)`` ranking into the gallery's rows.
        query_ids: ``Q`` query ids.
        gallery_ids: Gallery ids, one per gallery row.
        gallery_paths: Gallery paths, one per row, or ``None`` (empty in CSV, null in JSON).
        path: Output file ending in ``.csv`` or ``.json``.
        threshold: Rejection threshold; inserts "no match" entries (see :func:`ranked_rows`).

    Returns:
        The written path.
    """
    path = Path(path)
    suffix = results_format(path)
    rows = ranked_rows(result, query_ids, gallery_ids, gallery_paths, threshold)
    if suffix == ".csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        text = buffer.getvalue()
    else:
        ranking: dict[str, list[dict[str, Any]]] = {str(q): [] for q in query_ids}
        for row in rows:
            ranking[row["query_id"]].append({key: row[key] for key in CSV_COLUMNS[1:]})
        text = json.dumps(ranking, indent=2) + "\n"
    atomic_write_text(path, text)
    return path
