"""The :class:`Ranking` object and its file in a run folder (``ranking.npz``).

The file is a NumPy ``.npz`` archive of plain arrays (loaded with ``allow_pickle=False``), written
atomically; labels are stored as strings.
"""

from __future__ import annotations

import io
import os
import zipfile
from collections.abc import Hashable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lookalike.index.metrics import get_metric
from lookalike.index.result import SearchResult
from lookalike.ranking.labels import LabelCodes, relevance
from lookalike.utils.atomic import atomic_write_bytes

RANKING_FILE = "ranking.npz"
FORMAT_VERSION = 1


@dataclass
class Ranking:
    """The exact ranking of a gallery for each query, best first.

    The query's own gallery row (``exclude_rows``) and its junk items are already removed, so
    ranks count only the items a user would see.

    Attributes:
        neighbours: ``(Q, K)`` best gallery rows and their scores, padded with -1.
        codes: Query and gallery labels (see :mod:`lookalike.ranking.labels`).
        positive_query: ``(P,)`` int64 query row of every relevant (query, gallery item) pair,
            sorted by query then rank.
        positive_rank: ``(P,)`` int64 1-based rank of that item among the query's ranked items.
        metric: Name of the metric that scored the pairs ("cosine", "ip", "l2", "l1").
        exclude_rows: ``(Q,)`` gallery row removed from each query's ranking (-1 for none), or
            None when nothing was removed.
    """

    neighbours: SearchResult
    codes: LabelCodes
    positive_query: np.ndarray
    positive_rank: np.ndarray
    metric: str
    exclude_rows: np.ndarray | None = None

    def __post_init__(self) -> None:
        num_queries = len(self.codes.query)
        if len(self.neighbours) != num_queries:
            raise ValueError(
                f"the ranking has {len(self.neighbours)} neighbour rows for {num_queries} queries"
            )
        if self.positive_query.shape != self.positive_rank.shape:
            raise ValueError("positive_query and positive_rank must have the same shape")

    @property
    def num_queries(self) -> int:
        return len(self.codes.query)

    @property
    def num_gallery(self) -> int:
        return len(self.codes.gallery)

    @property
    def k(self) -> int:
        """Neighbours kept per query."""
        return self.neighbours.k

    @property
    def num_relevant(self) -> np.ndarray:
        """``(Q,)`` int64 relevant items each query can find (self and junk removed)."""
        return np.bincount(self.positive_query, minlength=self.num_queries).astype(np.int64)

    @property
    def first_positive_rank(self) -> np.ndarray:
        """``(Q,)`` int64 1-based rank of each query's first relevant item, 0 where none."""
        first = np.zeros(self.num_queries, dtype=np.int64)
        if len(self.positive_query):
            # positive_query is sorted, so the first entry of each run holds the best rank.
            starts = np.flatnonzero(np.r_[True, np.diff(self.positive_query) != 0])
            first[self.positive_query[starts]] = self.positive_rank[starts]
        return first

    def relevance(self, k: int | None = None) -> np.ndarray:
        """``(Q, k)`` bool relevance of the top-``k`` neighbours (all kept ones when None)."""
        return relevance(self.neighbours.indices[:, : k or self.k], self.codes)

    def labels_of(self, rows: np.ndarray) -> list[Hashable | None]:
        """The gallery labels of ``rows`` (None for unlabelled items and padding)."""
        out: list[Hashable | None] = []
        for row in np.asarray(rows, dtype=np.int64).ravel().tolist():
            code = int(self.codes.gallery[row]) if row >= 0 else -1
            out.append(self.codes.classes[code] if code >= 0 else None)
        return out

    def select(self, rows: np.ndarray) -> Ranking:
        """The ranking of the queries ``rows`` only, in that order (gallery unchanged).

        A row may repeat (a bootstrap sample of the queries): each copy keeps every relevant
        item of its query.
        """
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        if rows.size and (rows.min() < 0 or rows.max() >= self.num_queries):
            raise ValueError(f"query rows must lie in [0, {self.num_queries})")
        # positive_query is sorted, so each query's relevant items are one run of the arrays.
        counts = np.bincount(self.positive_query, minlength=self.num_queries)
        starts = np.cumsum(counts) - counts
        new_counts = counts[rows]
        new_starts = np.cumsum(new_counts) - new_counts
        new_query = np.repeat(np.arange(len(rows), dtype=np.int64), new_counts)
        source = np.repeat(starts[rows] - new_starts, new_counts) + np.arange(len(new_query))
        codes = LabelCodes(self.codes.query[rows], self.codes.gallery, self.codes.classes)
        return Ranking(
            SearchResult(
                self.neighbours.scores[rows],
                self.neighbours.indices[rows],
                self.neighbours.higher_is_better,
            ),
            codes,
            new_query,
            self.positive_rank[source],
            self.metric,
            None if self.exclude_rows is None else self.exclude_rows[rows],
        )

    def to_bytes(self) -> bytes:
        """The ``.npz`` archive of this ranking."""
        buffer = io.BytesIO()
        np.savez(
            buffer,
            format_version=np.int64(FORMAT_VERSION),
            scores=self.neighbours.scores,
            indices=self.neighbours.indices,
            higher_is_better=np.bool_(self.neighbours.higher_is_better),
            query_codes=self.codes.query,
            gallery_codes=self.codes.gallery,
            classes=np.array([str(label) for label in self.codes.classes], dtype=np.str_),
            positive_query=self.positive_query,
            positive_rank=self.positive_rank,
            metric=np.str_(self.metric),
            exclude_rows=(
                np.zeros(0, np.int64) if self.exclude_rows is None else self.exclude_rows
            ),
            has_exclude_rows=np.bool_(self.exclude_rows is not None),
        )
        return buffer.getvalue()

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the ranking atomically to ``path`` (a ``.npz`` file)."""
        atomic_write_bytes(path, self.to_bytes())
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Ranking:
        """Read a ranking written by :meth:`save`; labels come back as strings.

        Raises:
            FileNotFoundError: ``path`` does not exist.
            ValueError: The file is not a readable, consistent ranking.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"ranking file {path} does not exist")
        try:
            with np.load(path, allow_pickle=False) as archive:
                data = {name: archive[name] for name in archive.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
            raise ValueError(
                f"{path} is not a readable ranking file ({error}); rerun the job that wrote it"
            ) from error
        try:
            if int(data["format_version"]) != FORMAT_VERSION:
                raise ValueError(f"format version {int(data['format_version'])}")
            metric = str(data["metric"])
            get_metric(metric)
            classes = [str(label) for label in data["classes"].tolist()]
            codes = LabelCodes(
                data["query_codes"].astype(np.int64), data["gallery_codes"].astype(np.int64), classes
            )
            if codes.query.max(initial=-1) >= len(classes) or codes.gallery.max(initial=-1) >= len(
                classes
            ):
                raise ValueError("a label code has no class")
            ranking = cls(
                SearchResult(data["scores"], data["indices"], bool(data["higher_is_better"])),
                codes,
                data["positive_query"].astype(np.int64),
                data["positive_rank"].astype(np.int64),
                metric,
                data["exclude_rows"].astype(np.int64) if bool(data["has_exclude_rows"]) else None,
            )
            indices = ranking.neighbours.indices
            if indices.size and (indices.max() >= ranking.num_gallery or indices.min() < -1):
                raise ValueError("a neighbour row lies outside the gallery")
        except (KeyError, ValueError, TypeError) as error:
            raise ValueError(
                f"{path} is not a consistent ranking file ({error}); rerun the job that wrote it"
            ) from error
        return ranking
