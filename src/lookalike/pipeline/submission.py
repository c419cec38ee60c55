"""``submission`` as a library call: a gallery index and query embeddings in, a competition file out.

The file's format follows its suffix: ``.csv`` is a Kaggle-style ``Id,Predicted`` table, ``.json``
the ``{query_file: [gallery_file, ...]}`` competition JSON (see :mod:`lookalike.report.submission`).
The rejection threshold defaults to the one stored with the index, and a Kaggle CSV predicting
labels searches ``3 * k`` deep, since labels repeat down a ranking and k distinct ones are needed;
a query whose neighbours still hold fewer than k distinct labels is searched again, twice as deep
each time, until they do or the whole gallery is ranked.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from lookalike.embed.store import EmbeddingSet
from lookalike.index import Index, get_metric, load_index
from lookalike.index.milvus_index import MAX_TOPK
from lookalike.index.result import SearchResult
from lookalike.report.submission import (
    NAME_MODES,
    NO_MATCH_TOKEN,
    PREDICT_MODES,
    write_competition_json,
    write_kaggle_csv,
)
from lookalike.search.rejection import check_threshold
from lookalike.search.topk import search
from lookalike.utils.devices import check_device
from lookalike.utils.progress import ProgressFactory, tracker
from lookalike.utils.vectors import check_vectors

SUBMISSION_FORMATS = {".csv": "Kaggle CSV", ".json": "competition JSON"}
# Labels repeat down a ranking: a Kaggle CSV of labels searches this many times k deep.
LABEL_SEARCH_FACTOR = 3


@dataclass
class SubmissionOutcome:
    """A written submission.

    Attributes:
        path: The file.
        file_format: Its suffix, ".csv" (Kaggle) or ".json" (competition JSON).
        queries: Number of queries (rows of the CSV, keys of the JSON).
        k: Predictions per query.
        threshold: The rejection threshold applied, None when none was.
        no_match_token: What "no match" is written as.
    """

    path: Path
    file_format: str
    queries: int
    k: int
    threshold: float | None
    no_match_token: str


def submission_search_depth(k: int, file_format: str, predict: str) -> int:
    """How deep to search for ``k`` predictions: ``3 * k`` for a CSV of labels, else ``k``."""
    return LABEL_SEARCH_FACTOR * k if file_format == ".csv" and predict == "labels" else k


def _distinct(indices: np.ndarray, labels: Sequence[str | None]) -> int:
    return len({labels[row] for row in indices.tolist() if row >= 0})


def deep_enough(
    index: Index,
    query_embeddings: np.ndarray,
    result: SearchResult,
    labels: Sequence[str | None],
    k: int,
) -> SearchResult:
    """``result`` with every query that found fewer than ``k`` distinct labels searched again,
    twice as deep each time, until it finds k or its search covers the whole gallery (or the
    16384 neighbours a Milvus search returns at most).

    Args:
        index: The index ``result`` came from.
        query_embeddings: ``(Q, D)`` the queries searched.
        result: ``(Q, K)`` their neighbours.
        labels: ``(G,)`` the label of each gallery row.
        k: Distinct labels wanted per query.

    Returns:
        ``(Q, K')`` neighbours, ``K' >= K``; rows searched only ``K`` deep padded with -1.
    """
    worst = -np.inf if result.higher_is_better else np.inf
    depth, deepest = result.k, min(index.ntotal, MAX_TOPK)
    while depth < deepest:
        short = np.flatnonzero([_distinct(row, labels) < k for row in result.indices])
        if not short.size:
            break
        depth = min(2 * depth, deepest)
        deeper = search(index, query_embeddings[short], depth)
        scores = np.full((len(result), deeper.k), worst, dtype=np.float32)
        indices = np.full((len(result), deeper.k), -1, dtype=np.int64)
        scores[:, : result.k], indices[:, : result.k] = result.scores, result.indices
        scores[short], indices[short] = deeper.scores, deeper.indices
        result = SearchResult(scores, indices, result.higher_is_better)
    return result


def write_submission(
    index_folder: str | Path,
    queries: EmbeddingSet | str | Path,
    output: str | Path,
    k: int = 5,
    predict: Literal["labels", "ids"] = "labels",
    no_match_token: str = NO_MATCH_TOKEN,
    threshold: float | None = None,
    query_column: str = "Id",
    prediction_column: str = "Predicted",
    device: str = "cpu",
    progress: ProgressFactory | None = None,
    names: Literal["basename", "id", "relpath"] = "basename",
) -> SubmissionOutcome:
    """Search a gallery index with query embeddings and write the competition file.

    Args:
        index_folder: Gallery index folder (``lookalike index``); its labels are predicted.
        queries: Query embeddings or their folder, from the model that built the index.
        output: ``.csv`` (Kaggle: one row per query id) or ``.json`` (query file name → gallery
            file names).
        k: Predictions per query.
        predict: Kaggle CSV only: "labels" (distinct classes) or "ids" (gallery ids).
        no_match_token: Written for "no match" (the Humpback Whale competition's
            ``"new_whale"``).
        threshold: Rejection threshold; None: the one stored with the index, if any.
        query_column: Kaggle CSV: header of the query column.
        prediction_column: Kaggle CSV: header of the prediction column.
        device: Where to load the index.
        progress: Asked for one step, "searching" over the queries.
        names: Competition JSON only: images named by file name ("basename"; repeats are an
            error), path relative to the query or gallery folder ("relpath") or id ("id").

    Returns:
        Where the file went, with the settings it was written with.

    Raises:
        ValueError: An ``output`` suffix other than ``.csv``/``.json``, ``k < 1``, an unknown
            ``predict``, a NaN or infinite threshold (given or stored with the index), an
            unknown or absent ``device``, or queries from another model; nothing is written then.
    """
    output = Path(output)
    suffix = output.suffix.lower()
    if suffix not in SUBMISSION_FORMATS:
        raise ValueError(f"cannot tell the format of {output}: name it .csv (Kaggle) or .json")
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if suffix == ".csv" and predict not in PREDICT_MODES:
        raise ValueError(f"unknown predict {predict!r}; valid: {', '.join(PREDICT_MODES)}")
    if suffix == ".json" and names not in NAME_MODES:
        raise ValueError(f"unknown names {names!r}; valid: {', '.join(NAME_MODES)}")
    threshold = check_threshold(threshold, "threshold")
    check_device(device, allow_auto=False)
    query_set = queries if isinstance(queries, EmbeddingSet) else EmbeddingSet.load(queries)
    index, metadata = load_index(index_folder, query_set.fingerprint, device=device)
    query_name = "the query embeddings" if isinstance(queries, EmbeddingSet) else str(queries)
    check_vectors(query_set.embeddings, query_name, get_metric(metadata.metric).normalize)
    if threshold is None:
        threshold = check_threshold(
            metadata.threshold, f"the threshold stored with the index at {index_folder}"
        )
    depth = submission_search_depth(k, suffix, predict)
    result = search(
        index, query_set.embeddings, depth,
        progress=tracker(progress, "searching", len(query_set)),
    )
    if suffix == ".csv" and predict == "labels" and None not in metadata.labels:
        result = deep_enough(index, query_set.embeddings, result, metadata.labels, k)
    if suffix == ".json":
        by_id = names == "id"
        write_competition_json(output, result, query_set.ids if by_id else query_set.paths,
                               metadata.ids if by_id else metadata.paths, names=names, k=k,
                               rejection_threshold=threshold, no_match_token=no_match_token)
    else:
        write_kaggle_csv(output, result, query_set.ids, metadata.ids, metadata.labels,
                         predict=predict, k=k, rejection_threshold=threshold,
                         no_match_token=no_match_token, query_column=query_column,
                         prediction_column=prediction_column)
    return SubmissionOutcome(output, suffix, len(query_set), k, threshold, no_match_token)
