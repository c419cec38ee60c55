"""The catalogue in memory: an index, the id, label and image of each row, and tombstones.

Rows are only ever appended (an added item gets the next row) and a deleted item's row is
marked dead (a *tombstone*) rather than removed, since indexes cannot remove rows; searches
skip dead rows, and compaction (:mod:`lookalike.serve.store`) rebuilds the index without them.

A search asks the index for enough neighbours that, after dead rows and rows of other labels
are dropped, ``k`` remain: with an exact index the answer is exactly the top ``k`` of the live
rows that pass the filter. With no tombstone and no filter it is
:func:`lookalike.search.topk.search` itself.

This class does no locking and no I/O: :class:`~lookalike.serve.store.CatalogueStore` does both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from lookalike.index.base import Index
from lookalike.index.result import SearchResult
from lookalike.search.topk import search

_DEEPEN = 4


@dataclass(frozen=True)
class Neighbour:
    """One result: the item, its label, its score in the metric's own sense, and whether the
    catalogue knows an image of it."""

    id: str
    label: str | None
    score: float
    has_image: bool = True


@dataclass(frozen=True)
class LiveRows:
    """The live rows of a catalogue, copied out (what compaction writes).

    Attributes:
        vectors: ``(N, D)`` float32 stored vectors.
        ids: ``N`` ids.
        paths: ``N`` image paths.
        labels: ``N`` labels.
    """

    vectors: np.ndarray
    ids: list[str]
    paths: list[str]
    labels: list[str | None]


class Catalogue:
    """An index with its rows' ids, labels and images, and the set of deleted rows.

    Args:
        index: The index; row ``i`` is item ``ids[i]``.
        ids: ``ntotal`` unique ids.
        paths: ``ntotal`` image paths ("" where unknown).
        labels: ``ntotal`` labels (None where unknown).

    Raises:
        ValueError: The lists do not match the index, or an id repeats.
    """

    def __init__(
        self,
        index: Index,
        ids: Sequence[str],
        paths: Sequence[str],
        labels: Sequence[str | None],
    ) -> None:
        if not len(ids) == len(paths) == len(labels) == index.ntotal:
            raise ValueError(
                f"index holds {index.ntotal} rows but got {len(ids)} ids, {len(paths)} paths, "
                f"{len(labels)} labels"
            )
        self.index = index
        self.ids = [str(i) for i in ids]
        self.paths = [str(p) for p in paths]
        self.labels = [None if v is None else str(v) for v in labels]
        self.row_of: dict[str, int] = {}
        for row, item_id in enumerate(self.ids):
            if item_id in self.row_of:
                raise ValueError(
                    f"id {item_id!r} appears more than once in the index; a served catalogue "
                    "needs unique ids (rebuild the index from a source without duplicates)"
                )
            self.row_of[item_id] = row
        self.dead = np.zeros(index.ntotal, dtype=bool)
        self._label_array: np.ndarray | None = None

    @property
    def size(self) -> int:
        """Number of live items."""
        return len(self.row_of)

    @property
    def dead_count(self) -> int:
        """Number of deleted rows still in the index."""
        return int(self.dead.sum())

    def __contains__(self, item_id: object) -> bool:
        return item_id in self.row_of

    def label_of(self, item_id: str) -> str | None:
        return self.labels[self.row_of[item_id]]

    def path_of(self, item_id: str) -> str:
        return self.paths[self.row_of[item_id]]

    def label_names(self) -> list[str]:
        """The distinct labels of live items, sorted."""
        return sorted({self.labels[row] for row in self.row_of.values()} - {None})  # type: ignore[type-var]

    def vectors_of(self, item_ids: Sequence[str]) -> np.ndarray:
        """``(len(item_ids), D)`` stored vectors of live items (KeyError for an unknown id)."""
        rows = np.array([self.row_of[item_id] for item_id in item_ids], dtype=np.int64)
        return self.index.reconstruct(rows)

    def add(
        self,
        ids: Sequence[str],
        vectors: np.ndarray,
        paths: Sequence[str],
        labels: Sequence[str | None],
    ) -> None:
        """Append new items (their ids must be new: checked by the caller before journaling)."""
        clash = [item_id for item_id in ids if item_id in self.row_of]
        if clash or len(set(ids)) != len(ids):
            raise ValueError(f"ids already in the catalogue or repeated: {clash or list(ids)}")
        start = self.index.ntotal
        self.index.add(
            np.asarray(vectors, dtype=np.float32).reshape(len(ids), self.index.dim), labels=labels
        )
        for offset, (item_id, path, label) in enumerate(zip(ids, paths, labels)):
            self.ids.append(str(item_id))
            self.paths.append(str(path))
            self.labels.append(None if label is None else str(label))
            self.row_of[str(item_id)] = start + offset
        self.dead = np.concatenate([self.dead, np.zeros(len(ids), dtype=bool)])
        self._label_array = None

    def delete(self, ids: Sequence[str]) -> None:
        """Mark live items dead (KeyError for an unknown id, before anything changes)."""
        rows = [self.row_of[item_id] for item_id in ids]
        for item_id, row in zip(ids, rows):
            self.dead[row] = True
            del self.row_of[item_id]

    def live_rows(self) -> LiveRows:
        """Copies of the live rows, in row order."""
        rows = np.flatnonzero(~self.dead)
        return LiveRows(
            vectors=self.index.reconstruct(rows),
            ids=[self.ids[row] for row in rows],
            paths=[self.paths[row] for row in rows],
            labels=[self.labels[row] for row in rows],
        )

    def search(
        self,
        queries: np.ndarray,
        k: int,
        label: str | None = None,
        exclude_ids: Sequence[str | None] | None = None,
    ) -> tuple[SearchResult, list[list[Neighbour]]]:
        """The ``k`` best live items for each query, optionally only those of one label.

        Args:
            queries: ``(Q, D)`` query vectors.
            k: Neighbours per query.
            label: Keep only items with this label.
            exclude_ids: Per query, an item to leave out (its own, when searching by an item),
                or None.

        Returns:
            ``(Q, min(k, ntotal))`` :class:`SearchResult` into the index's rows (padded with -1
            and the worst score where fewer items qualify) and, per query, its neighbours.
        """
        if self.index.ntotal == 0 or self.size == 0:
            empty = np.zeros((len(queries), 0))
            result = SearchResult(empty, empty.astype(np.int64), self.index.metric.higher_is_better)
            return result, [[] for _ in range(len(queries))]
        exclude_rows = None
        if exclude_ids is not None:
            exclude_rows = np.array(
                [-1 if i is None else self.row_of.get(i, -1) for i in exclude_ids], np.int64
            )
        allowed = self._allowed(label)
        k = min(int(k), self.index.ntotal)
        if allowed is None:
            result = search(self.index, queries, k, exclude_rows)
        else:
            result = self._filtered_search(queries, k, allowed, exclude_rows, label is not None)
        return result, self._neighbours(result)

    def _allowed(self, label: str | None) -> np.ndarray | None:
        """``(ntotal,)`` rows a result may hold; None when every row may."""
        if label is None:
            return ~self.dead if self.dead.any() else None
        if self._label_array is None:
            self._label_array = np.array(self.labels, dtype=object)
        return (self._label_array == label) & ~self.dead

    def _filtered_search(
        self,
        queries: np.ndarray,
        k: int,
        allowed: np.ndarray,
        exclude_rows: np.ndarray | None,
        labelled: bool,
    ) -> SearchResult:
        """Search deep enough that ``k`` allowed rows survive; keep the first ``k`` of them."""
        ntotal = self.index.ntotal
        dropped = ntotal - int(allowed.sum())
        depth = min(ntotal, k + dropped if not labelled else max(_DEEPEN * k, k + self.dead_count))
        while True:
            deep = search(self.index, queries, depth, exclude_rows)
            keep = (deep.indices >= 0) & allowed[np.maximum(deep.indices, 0)]
            enough = keep.sum(axis=1) >= min(k, int(allowed.sum()))
            if enough.all() or depth >= ntotal:
                break
            depth = min(ntotal, depth * _DEEPEN)
        worst = np.float32(self.index.metric.worst())
        scores = np.full((len(queries), k), worst, dtype=np.float32)
        indices = np.full((len(queries), k), -1, dtype=np.int64)
        for query in range(len(queries)):
            columns = np.flatnonzero(keep[query])[:k]
            scores[query, : len(columns)] = deep.scores[query, columns]
            indices[query, : len(columns)] = deep.indices[query, columns]
        return SearchResult(scores, indices, deep.higher_is_better)

    def _neighbours(self, result: SearchResult) -> list[list[Neighbour]]:
        return [
            [
                Neighbour(self.ids[row], self.labels[row], float(score), bool(self.paths[row]))
                for score, row in zip(scores.tolist(), rows.tolist())
                if row >= 0
            ]
            for scores, rows in zip(result.scores, result.indices)
        ]
