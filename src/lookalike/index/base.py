"""The protocol every nearest-neighbour index follows, and the registry that names them.

An index holds gallery embeddings as rows numbered in insertion order (``0 .. ntotal - 1``) and
answers top-k queries with a :class:`~lookalike.index.result.SearchResult`, best first, in the
metric's own sense (similarities for cosine/ip, distances for l2/l1). Mapping row numbers to image
ids is :mod:`lookalike.index.io`'s job::

    index = create_index("hnsw", dim=512, metric="cosine", M=32)
    index.add(gallery_embeddings)            # (N, D) float32
    result = index.search(query_embeddings, k=10)
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from lookalike.index.metrics import Metric, get_metric
from lookalike.index.result import SearchResult
from lookalike.registry import Registry
from lookalike.utils.devices import check_device as check_devices_present

INDEXES: Registry[Index] = Registry("index")


class Index(ABC):
    """A searchable set of ``(N, D)`` float32 gallery rows.

    Subclasses implement :meth:`_add`, :meth:`_search` and the state read/write used by
    :mod:`lookalike.index.io`; this class validates inputs and prepares them for the metric
    (L2-normalisation for cosine), so every entry sees clean ``(N, D)`` float32 C-contiguous rows.

    Args:
        dim: Embedding width ``D``.
        metric: A :class:`Metric` or its name ("cosine", "ip", "l2", "l1").
        device: "cpu" or a CUDA device ("cuda", "cuda:1").
    """

    kind: ClassVar[str]
    state_file: ClassVar[str]
    exact: ClassVar[bool] = False  # True when every search returns the true top-k
    supported_metrics: ClassVar[tuple[str, ...]] = ("cosine", "ip", "l2", "l1")

    def __init__(self, dim: int, metric: Metric | str = "cosine", device: str = "cpu") -> None:
        if int(dim) <= 0:
            raise ValueError(f"index dimension must be positive, got {dim}")
        self.dim = int(dim)
        self.metric = get_metric(metric) if isinstance(metric, str) else metric
        if self.metric.name not in self.supported_metrics:
            supporting = [
                name
                for name in INDEXES.names()
                if self.metric.name in getattr(INDEXES.get(name), "supported_metrics", ())
            ]
            raise ValueError(
                f"index kind {self.kind!r} does not support metric {self.metric.name!r}; "
                f"index kinds that do: {', '.join(supporting)}"
            )
        check_device(device)
        self.device = device

    @property
    @abstractmethod
    def ntotal(self) -> int:
        """Number of rows added so far."""

    @property
    def is_trained(self) -> bool:
        """Whether :meth:`add` may be called (indexes that need no training are always trained)."""
        return True

    @property
    def read_only(self) -> bool:
        """Whether rows can no longer be added (an index loaded memory-mapped)."""
        return False

    @property
    def params(self) -> dict[str, Any]:
        """The constructor parameters beyond ``dim``, ``metric`` and ``device`` (saved with it)."""
        return {}

    def train(self, vectors: np.ndarray) -> None:
        """Learn the index structure (coarse centroids, codebooks) from ``(N, D)`` rows.

        A no-op for indexes that need no training.
        """
        self._check(vectors, "training vectors")

    def add(self, vectors: np.ndarray, labels: Sequence[str | None] | None = None) -> None:
        """Append ``(N, D)`` rows; they get row numbers ``ntotal .. ntotal + N - 1``.

        ``labels`` (one per row, None where unknown) are kept by kinds that can filter a search
        by label (``milvus``) and ignored by the others; an index folder's records keep them for
        every kind.
        """
        if labels is not None and len(labels) != np.asarray(vectors).shape[0]:
            raise ValueError(f"got {len(labels)} labels for {np.asarray(vectors).shape[0]} vectors")
        self._add(self._check(vectors, "vectors"))

    def search(self, queries: np.ndarray, k: int) -> SearchResult:
        """The ``k`` best rows for each of ``(Q, D)`` queries.

        Returns:
            :class:`SearchResult` with ``(Q, k)`` scores and row indices, best first; where the
            index holds fewer than ``k`` rows the tail is padded with index -1 and the metric's
            worst score (``-inf`` for similarities, ``+inf`` for distances).
        """
        if int(k) < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        prepared = self._check(queries, "queries")
        if self.ntotal == 0:
            raise ValueError(f"cannot search an empty {self.kind} index; add gallery vectors first")
        scores, indices = self._search(prepared, int(k))
        return SearchResult(scores, indices, self.metric.higher_is_better)

    def reconstruct(self, rows: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
        """``(R, D)`` float32 stored vectors of ``rows`` (all rows when None), as the index keeps
        them: L2-normalised for cosine, quantised where the index quantises (IVF-PQ).

        A served catalogue needs this to search by an item's own row and to rebuild an index
        without its deleted rows.

        Raises:
            ValueError: A row is out of range, or this kind (or device) cannot give rows back.
        """
        raise ValueError(
            f"a {self.kind} index on {self.device} cannot give its stored rows back; use an "
            "exact_torch, flat, hnsw, ivf_flat, ivf_pq or milvus index on the CPU"
        )

    def empty_copy(self) -> Index:
        """A new, empty index of this kind, metric, device and parameters, keeping what this one
        learned in training (IVF centroids, PQ codebooks), ready for :meth:`add`."""
        return create_index(self.kind, self.dim, self.metric, device=self.device, **self.params)

    def _row_numbers(self, rows: Sequence[int] | np.ndarray | None) -> np.ndarray:
        """``rows`` as an int64 array (all rows when None), each checked to be in range."""
        if rows is None:
            return np.arange(self.ntotal, dtype=np.int64)
        selected = np.asarray(rows, dtype=np.int64).reshape(-1)
        if selected.size and (selected.min() < 0 or selected.max() >= self.ntotal):
            raise ValueError(f"rows must lie in [0, {self.ntotal}), got {selected.tolist()[:10]}")
        return selected

    @abstractmethod
    def _add(self, vectors: np.ndarray) -> None:
        """Append prepared ``(N, D)`` rows."""

    @abstractmethod
    def _search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Scores and indices ``(Q, k)`` for prepared queries, padded as :meth:`search` says."""

    @abstractmethod
    def write_state(self, path: Path) -> None:
        """Write the rows and learned structure to ``path`` (a file called :attr:`state_file`)."""

    @abstractmethod
    def read_state(self, path: Path) -> None:
        """Replace this index's content with what :meth:`write_state` wrote at ``path``."""

    def _check(self, vectors: np.ndarray, name: str) -> np.ndarray:
        """Validate ``(N, D)`` rows and prepare them for the metric."""
        array = np.asarray(vectors)
        if array.ndim != 2 or array.shape[1] != self.dim:
            raise ValueError(f"{name} must have shape (N, {self.dim}), got {array.shape}")
        prepared = self.metric.prepare(array)
        if not np.isfinite(prepared).all():
            raise ValueError(f"{name} contain NaN or infinite values")
        return prepared

    def __repr__(self) -> str:
        params = ", ".join(f"{key}={value!r}" for key, value in self.params.items())
        extra = f", {params}" if params else ""
        return (
            f"{type(self).__name__}(dim={self.dim}, metric={self.metric.name!r}, "
            f"device={self.device!r}, ntotal={self.ntotal}{extra})"
        )


def check_device(device: str) -> None:
    """Refuse a device no index can live on ("cpu", "cuda", "cuda:N" only) or this machine lacks."""
    if not (device == "cpu" or device.startswith("cuda")):
        raise ValueError(f"unknown device {device!r}; use 'cpu', 'cuda' or 'cuda:N'")
    check_devices_present(device, allow_auto=False)


def create_index(
    kind: str, dim: int, metric: Metric | str = "cosine", device: str = "cpu", **params: Any
) -> Index:
    """Build the index registered as ``kind`` (see ``INDEXES.names()``).

    Args:
        kind: "exact_torch", "flat", "ivf_flat", "ivf_pq" or "hnsw" (or any registered entry).
        dim: Embedding width ``D``.
        metric: "cosine", "ip", "l2" or "l1".
        device: "cpu" or "cuda[:N]".
        **params: The entry's own parameters (``nlist``, ``nprobe``, ``M``, ...).

    Raises:
        ValueError: ``kind`` or ``metric`` is unknown (the message lists the valid names), or the
            parameters do not fit the entry.
    """
    factory = INDEXES.get(kind)
    resolved = get_metric(metric) if isinstance(metric, str) else metric
    accepted = inspect.signature(factory).parameters
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        common = ("self", "dim", "metric", "device")
        valid = ", ".join(name for name in accepted if name not in common)
        raise ValueError(
            f"{kind} index does not take {', '.join(unknown)}; its parameters: {valid or '(none)'}"
        )
    return factory(dim=dim, metric=resolved, device=device, **params)
