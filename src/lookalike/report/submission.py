"""Submission writers: turn a :class:`SearchResult` into the files competitions grade.

Two formats are written, both atomically (:mod:`lookalike.utils.atomic`):

* **Kaggle-style CSV** (Humpback Whale Identification, Google Landmark Recognition): a header
  ``Id,Predicted`` and one row per query, the prediction a space-separated list of the top-k
  gallery *labels* (classes, deduplicated in rank order) or gallery *ids*. Those competitions
  grade MAP@5 over classes, so repeating a class wastes a slot.
* **Competition JSON**: ``{query_filename: [gallery_filename_1, ..., gallery_filename_k]}``,
  each image named by its file name (``names="basename"``), its path relative to its folder
  (``"relpath"``; unique where file names repeat in different folders) or its id (``"id"``).
  Names must be unique: two images of one name are an error naming both.

Class answers (:class:`~lookalike.search.class_answers.ClassAnswers`, a classifier head's or kNN
votes' top classes) are a ranking over classes, so :func:`write_class_answers` writes them with the
same rules: the classes are both the "gallery ids" and the "labels".

Open-set rejection: with a ``rejection_threshold``, a "no match" token (default
:data:`NO_MATCH_TOKEN`; the whale competition used ``"new_whale"``) is inserted at the first
rank whose score is worse than the threshold, as in the winning Humpback Whale solutions, so a
query unlike every gallery image predicts "no match" first.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np

from lookalike.index.result import SearchResult
from lookalike.search.class_answers import ClassAnswers
from lookalike.search.rejection import apply_threshold
from lookalike.utils.atomic import atomic_write_text

logger = logging.getLogger(__name__)

NO_MATCH_TOKEN = "no_match"
PREDICT_MODES = ("labels", "ids")
NAME_MODES = ("basename", "id", "relpath")


def insert_no_match(
    row_scores: Sequence[float],
    row_items: Sequence[str],
    threshold: float,
    higher_is_better: bool,
    token: str,
) -> list[str]:
    """Insert ``token`` before the first item whose score is worse than ``threshold``.

    "Worse" keeps the metric's own sense: below the threshold for similarities, above it for
    distances; a score equal to the threshold is accepted. When no score is worse the token goes
    after every item, so truncating the list to k drops it unless the row is short.

    Args:
        row_scores: ``(n,)`` scores of one query's ranked items, best first.
        row_items: ``(n,)`` the items (labels or ids) in the same order.
        threshold: The rejection threshold, in the same units as ``row_scores``.
        higher_is_better: True when the scores are similarities.
        token: The "no match" token to insert.

    Returns:
        The ``n + 1`` items with ``token`` inserted once.
    """
    if len(row_scores) != len(row_items):
        raise ValueError(f"{len(row_scores)} scores but {len(row_items)} items in a row")
    # The one rule of lookalike.search.rejection, so files and metrics agree to the last bit.
    row = SearchResult(
        np.asarray([row_scores], dtype=np.float32),
        np.arange(len(row_items), dtype=np.int64)[None, :],
        higher_is_better,
    )
    position = int(apply_threshold(row, threshold)[0])
    return [*row_items[:position], token, *row_items[position:]]


def _unique_in_order(items: Sequence[str]) -> list[int]:
    """Positions of the first occurrence of each distinct item."""
    seen: set[str] = set()
    keep = []
    for position, item in enumerate(items):
        if item not in seen:
            seen.add(item)
            keep.append(position)
    return keep


def predictions(
    result: SearchResult,
    gallery_items: Sequence[str],
    *,
    k: int = 5,
    rejection_threshold: float | None = None,
    no_match_token: str = NO_MATCH_TOKEN,
) -> list[list[str]]:
    """The top-k distinct gallery items of each query, with the optional "no match" token.

    Each row walks down the ranked list (skipping ``-1`` padding), keeps the first occurrence of
    each item (so for labels it yields up to k distinct classes; pass a result deeper than k,
    e.g. ``3 * k``, so that k distinct labels exist), inserts ``no_match_token`` by
    :func:`insert_no_match` when a threshold is given, and truncates to k.

    Args:
        result: ``(Q, K)`` ranked neighbours of the queries.
        gallery_items: ``(G,)`` what to predict for each gallery row (its label or its id).
        k: Predictions per query.
        rejection_threshold: Score beyond which a neighbour is "no match"; None to never reject.
        no_match_token: The token written for "no match".

    Returns:
        ``Q`` lists of at most ``k`` strings, best first.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if result.indices.size and int(result.indices.max()) >= len(gallery_items):
        raise ValueError(
            f"result indexes gallery row {int(result.indices.max())} but the gallery has "
            f"{len(gallery_items)} items; pass the gallery the search ran on"
        )
    rows = []
    for scores, indices in zip(result.scores, result.indices, strict=True):
        valid = indices >= 0
        items = [gallery_items[i] for i in indices[valid]]
        kept = _unique_in_order(items)
        row_items = [items[i] for i in kept]
        if rejection_threshold is not None:
            row_scores = scores[valid][kept].tolist()
            row_items = insert_no_match(
                row_scores, row_items, rejection_threshold, result.higher_is_better, no_match_token
            )
            # A gallery item may itself be spelled like the token (a "new_whale" label).
            row_items = [row_items[i] for i in _unique_in_order(row_items)]
        rows.append(row_items[:k])
    short = sum(len(row) < k for row in rows)
    if short:
        logger.warning(
            "%d of %d queries have fewer than %d predictions; search deeper than k=%d",
            short, len(rows), k, result.k,
        )
    return rows


def _check_queries(result: SearchResult, query_ids: Sequence[str]) -> list[str]:
    names = [str(name) for name in query_ids]
    if len(names) != len(result):
        raise ValueError(f"{len(names)} query ids but the result has {len(result)} rows")
    if len(set(names)) != len(names):
        duplicate = next(name for name in names if names.count(name) > 1)
        raise ValueError(f"query id {duplicate!r} appears more than once; query ids must be unique")
    return names


def write_kaggle_csv(
    path: str | os.PathLike[str],
    result: SearchResult,
    query_ids: Sequence[str],
    gallery_ids: Sequence[str],
    gallery_labels: Sequence[str | None] | None = None,
    *,
    predict: Literal["labels", "ids"] = "labels",
    k: int = 5,
    rejection_threshold: float | None = None,
    no_match_token: str = NO_MATCH_TOKEN,
    query_column: str = "Id",
    prediction_column: str = "Predicted",
) -> Path:
    """Write a Kaggle-style submission CSV: one row per query, space-separated predictions.

    Args:
        path: Output CSV.
        result: ``(Q, K)`` ranked neighbours; for ``predict="labels"`` make K larger than k so
            that k distinct labels can be found (see :func:`predictions`).
        query_ids: ``(Q,)`` unique query ids, in the result's row order.
        gallery_ids: ``(G,)`` gallery ids, in the order the search indexed them.
        gallery_labels: ``(G,)`` gallery labels; required for ``predict="labels"``.
        predict: ``"labels"`` (classes, deduplicated) or ``"ids"`` (gallery ids).
        k: Predictions per query (Kaggle MAP@5 tasks use 5).
        rejection_threshold: Optional open-set threshold (see :func:`insert_no_match`).
        no_match_token: Written for "no match"; the Humpback Whale competition used
            ``"new_whale"``.
        query_column: Header of the query column.
        prediction_column: Header of the prediction column.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    if predict not in PREDICT_MODES:
        raise ValueError(f"unknown predict {predict!r}; valid: {', '.join(PREDICT_MODES)}")
    names = _check_queries(result, query_ids)
    if predict == "labels":
        if gallery_labels is None:
            raise ValueError("predict='labels' needs gallery_labels; pass them or predict='ids'")
        if len(gallery_labels) != len(gallery_ids):
            raise ValueError(
                f"{len(gallery_labels)} gallery labels but {len(gallery_ids)} gallery ids"
            )
        if any(label is None for label in gallery_labels):
            raise ValueError("some gallery labels are None; label the gallery or predict='ids'")
        gallery_items = [str(label) for label in gallery_labels]
    else:
        gallery_items = [str(gallery_id) for gallery_id in gallery_ids]
    for item in (*gallery_items, no_match_token):
        if not item or any(ch.isspace() for ch in item):
            raise ValueError(
                f"prediction {item!r} is empty or contains whitespace, which the space-separated "
                "prediction column cannot hold; rename it"
            )
    rows = predictions(
        result,
        gallery_items,
        k=k,
        rejection_threshold=rejection_threshold,
        no_match_token=no_match_token,
    )
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([query_column, prediction_column])
    writer.writerows([name, " ".join(row)] for name, row in zip(names, rows, strict=True))
    atomic_write_text(path, buffer.getvalue())
    logger.info("wrote %d predictions to %s", len(rows), path)
    return Path(path)


def write_class_answers(
    path: str | os.PathLike[str],
    answers: ClassAnswers,
    query_ids: Sequence[str],
    *,
    k: int = 5,
    rejection_threshold: float | None = None,
    no_match_token: str = NO_MATCH_TOKEN,
    query_column: str = "Id",
    prediction_column: str = "Predicted",
) -> Path:
    """Write class answers as a Kaggle-style CSV: per query its top-k classes by score, "no
    match" inserted before the first class whose score (probability) is below the threshold.

    Args:
        path: Output CSV.
        answers: The classes of each query, best first, with their scores.
        query_ids: ``(Q,)`` unique query ids in the answers' row order.
        k: Predictions per query.
        rejection_threshold: Probability below which "no match" is inserted; None: never.
        no_match_token: Written for "no match".
        query_column: Header of the query column.
        prediction_column: Header of the prediction column.
    """
    return write_kaggle_csv(
        path, answers.result, query_ids, answers.classes, answers.classes, predict="labels", k=k,
        rejection_threshold=rejection_threshold, no_match_token=no_match_token,
        query_column=query_column, prediction_column=prediction_column,
    )


def read_kaggle_csv(
    path: str | os.PathLike[str],
    *,
    query_column: str = "Id",
    prediction_column: str = "Predicted",
) -> dict[str, list[str]]:
    """Read a Kaggle-style submission CSV back into ``{query_id: [prediction, ...]}``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"submission {path} does not exist")
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        header = reader.fieldnames or []
        missing = [c for c in (query_column, prediction_column) if c not in header]
        if missing:
            raise ValueError(f"{path} lacks column(s) {missing}; its header is {header}")
        table: dict[str, list[str]] = {}
        for row in reader:
            query = row[query_column]
            if query in table:
                raise ValueError(f"{path} lists query {query!r} twice")
            table[query] = row[prediction_column].split()
    return table


def _relative_root(items: Sequence[str | os.PathLike[str]], root: str | None) -> Path:
    """``root``, or the deepest folder holding every item."""
    if root is not None:
        return Path(root)
    parents = [os.path.abspath(os.path.dirname(os.fspath(item))) for item in items]
    return Path(os.path.commonpath(parents)) if parents else Path(".")


def _relpath(item: str | os.PathLike[str], root: Path, role: str) -> str:
    path = Path(os.path.abspath(os.fspath(item)))
    try:
        return path.relative_to(os.path.abspath(root)).as_posix()
    except ValueError:
        raise ValueError(
            f"{role} {os.fspath(item)!r} is not inside {root}; pass the folder that holds the "
            f"{role} images as the root"
        ) from None


def competition_names(
    items: Sequence[str | os.PathLike[str]],
    names: str,
    role: str,
    root: str | os.PathLike[str] | None = None,
) -> list[str]:
    """The name of each item under ``names``; a ``ValueError`` naming both items of a repeat."""
    if names == "relpath":
        base = _relative_root(items, None if root is None else os.fspath(root))
        result = [_relpath(item, base, role) for item in items]
    else:
        result = [Path(item).name if names == "basename" else str(item) for item in items]
    first: dict[str, int] = {}
    for position, name in enumerate(result):
        if name in first:
            hint = (
                "pass names='relpath' (paths relative to the folder) or names='id'"
                if names == "basename"
                else "give every image a unique name"
            )
            raise ValueError(
                f"{role} name {name!r} appears more than once ({os.fspath(items[first[name]])} "
                f"and {os.fspath(items[position])}); {hint}"
            )
        first[name] = position
    return result


def write_competition_json(
    path: str | os.PathLike[str],
    result: SearchResult,
    query_names: Sequence[str | os.PathLike[str]],
    gallery_names: Sequence[str | os.PathLike[str]],
    *,
    names: Literal["basename", "id", "relpath"] = "basename",
    k: int | None = None,
    rejection_threshold: float | None = None,
    no_match_token: str = NO_MATCH_TOKEN,
    query_root: str | os.PathLike[str] | None = None,
    gallery_root: str | os.PathLike[str] | None = None,
) -> Path:
    """Write ``{query_filename: [gallery_filename_1, ..., gallery_filename_k]}`` as JSON.

    Args:
        path: Output JSON.
        result: ``(Q, K)`` ranked neighbours.
        query_names: ``(Q,)`` query paths or ids, in the result's row order.
        gallery_names: ``(G,)`` gallery paths or ids, in the order the search indexed them.
        names: ``"basename"`` keeps each path's file name (the usual competition key; file
            names repeated in different folders are an error); ``"relpath"`` each path relative
            to ``query_root``/``gallery_root``; ``"id"`` writes the strings as given.
        k: Neighbours per query; None for all K of the result.
        rejection_threshold: Optional open-set threshold (see :func:`insert_no_match`).
        no_match_token: Written for "no match".
        query_root: ``"relpath"``: the folder query paths are relative to; None for the deepest
            folder holding them all.
        gallery_root: The same for the gallery paths.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    if names not in NAME_MODES:
        raise ValueError(f"unknown names {names!r}; valid: {', '.join(NAME_MODES)}")
    queries = _check_queries(result, competition_names(query_names, names, "query", query_root))
    gallery = competition_names(gallery_names, names, "gallery", gallery_root)
    rows = predictions(
        result,
        gallery,
        k=result.k if k is None else k,
        rejection_threshold=rejection_threshold,
        no_match_token=no_match_token,
    )
    submission = dict(zip(queries, rows, strict=True))
    atomic_write_text(path, json.dumps(submission, indent=2) + "\n")
    logger.info("wrote %d rankings to %s", len(rows), path)
    return Path(path)


def read_competition_json(path: str | os.PathLike[str]) -> dict[str, list[str]]:
    """Read a competition JSON back into ``{query_name: [gallery_name, ...]}``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"submission {path} does not exist")
    table = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(table, dict) or not all(isinstance(v, list) for v in table.values()):
        raise ValueError(f"{path} is not a {{query: [gallery, ...]}} JSON object")
    return {str(query): [str(item) for item in ranked] for query, ranked in table.items()}
