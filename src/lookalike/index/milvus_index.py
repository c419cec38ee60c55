"""A Milvus collection behind the index protocol: Milvus Lite by default, a server by URI.

Wang et al., "Milvus: A Purpose-Built Vector Data Management System", SIGMOD 2021. Row ``i`` of
the index is the entity whose INT64 primary key ``row`` is ``i``; its label is a VARCHAR field, so
a search can be filtered by label (:meth:`MilvusIndex.search` with ``labels``). Index types and
metrics map onto Milvus's: ``FLAT``, ``IVF_FLAT`` (``nlist``, ``nprobe``), ``HNSW`` (``M``,
``ef_construction``, ``ef_search``); cosine → ``COSINE``, ip → ``IP``, l2 → ``L2``. Milvus's L2
is the squared distance, turned back into the Euclidean distance here, so scores follow
:class:`~lookalike.index.result.SearchResult` as every other kind's do. L1 is not a metric of
Milvus float vectors.

An index folder keeps the state in a ``milvus/`` folder: ``milvus.json`` (collection, rows, and
for a server its URI, never its token) and, for Milvus Lite, a copy of the database
(``catalogue.db/``), so save, load, the manifest and the server's compaction work as for FAISS.
A loaded Lite index works on a private copy of that database; the folder's copy is never opened.

Each :meth:`~MilvusIndex.add` to a Lite database seals the rows (a flush), which makes Milvus
build the IVF or HNSW index asked for; Lite attaches it in the background a moment later and
answers exactly (brute force) until then. A server seals rows on its own schedule.
"""

from __future__ import annotations

import json
import logging
import threading
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from lookalike.index import milvus_store as store
from lookalike.index.base import INDEXES, Index
from lookalike.index.metrics import Metric
from lookalike.index.result import SearchResult
from lookalike.utils.folders import ArtefactError

logger = logging.getLogger(__name__)

MAX_TOPK = 16_384  # Milvus's largest ``limit`` (and ``nq``) per search
QUERY_BATCH = 1_024
INSERT_BYTES = 16 * 2**20  # well under Milvus's 64 MiB gRPC message limit
REFERENCE_FILE = "milvus.json"
FORMAT_VERSION = 1
_REBUILD = "rebuild the index with `lookalike index`"


@INDEXES.register("milvus")
class MilvusIndex(Index):
    """Rows in a Milvus collection (Milvus Lite, or a Milvus server or cluster).

    Args:
        dim: Embedding width ``D``.
        metric: "cosine", "ip" or "l2".
        device: "cpu" (Milvus Lite runs on the CPU; a server uses whatever it was deployed on).
        uri: None for a Milvus Lite database in a private temporary folder; a local path
            (``./catalogue.db``) for a Lite database there; or a server's URI
            (``http://host:19530``). Only a server's URI is saved with the index.
        collection: Collection name; None for ``lookalike`` in a Lite database and a new unique
            name on a server.
        index_type: "FLAT" (exact), "IVF_FLAT" or "HNSW".
        nlist: IVF_FLAT cells.
        nprobe: IVF_FLAT cells visited per query.
        M: HNSW graph neighbours per node.
        ef_construction: HNSW candidate list while building.
        ef_search: HNSW candidate list while searching (raised to ``k`` where smaller, as
            Milvus requires).
        token_env: Environment variable holding a server's token (never saved).
        insert_batch: Most rows per insert call (fewer for wide vectors: at most 16 MiB).
    """

    kind = "milvus"
    state_file = "milvus"
    supports_gpu: ClassVar[bool] = False
    supported_metrics = ("cosine", "ip", "l2")

    def __init__(
        self,
        dim: int,
        metric: Metric | str = "cosine",
        device: str = "cpu",
        uri: str | None = None,
        collection: str | None = None,
        index_type: str = "FLAT",
        nlist: int = 128,
        nprobe: int = 16,
        M: int = 16,
        ef_construction: int = 200,
        ef_search: int = 64,
        token_env: str = store.DEFAULT_TOKEN_ENV,
        insert_batch: int = 10_000,
    ) -> None:
        super().__init__(dim, metric, device)
        if device != "cpu":
            raise ValueError(
                f"the milvus index runs in Milvus, not on {device!r}; use device 'cpu' (a Milvus "
                "server uses the GPUs it was deployed with)"
            )
        self.index_type = str(index_type).upper()
        if self.index_type not in store.INDEX_TYPES:
            raise ValueError(
                f"unknown Milvus index_type {index_type!r}; valid: {', '.join(store.INDEX_TYPES)}"
            )
        for name, value in (("nlist", nlist), ("nprobe", nprobe), ("M", M),
                            ("ef_construction", ef_construction), ("ef_search", ef_search),
                            ("insert_batch", insert_batch)):  # fmt: skip
            if int(value) < 1:
                raise ValueError(f"{name} must be a positive integer, got {value}")
        store.import_pymilvus()  # fail here, in one line, when the extra is not installed
        self.uri = None if uri is None else str(uri)
        self.server = store.is_server_uri(self.uri)
        self.collection = collection or (
            store.new_collection_name() if self.server else "lookalike"
        )
        self.nlist, self.nprobe = int(nlist), int(nprobe)
        self.M, self.ef_construction, self.ef_search = int(M), int(ef_construction), int(ef_search)
        self.token_env = token_env
        self.insert_batch = int(insert_batch)
        self._workspace: store.LiteWorkspace | None = None
        self._database: Path | None = None if self.server or self.uri is None else Path(self.uri)
        self._connection: store.Connection | None = None
        self._closer: weakref.finalize | None = None
        self._connecting = threading.Lock()  # a server searches from several threads
        self._created = False
        self._next_row = 0

    # -- the protocol --------------------------------------------------------------------------

    @property
    def ntotal(self) -> int:
        """Row numbers given out so far (deleted rows keep theirs)."""
        return self._next_row

    @property
    def params(self) -> dict[str, Any]:
        params: dict[str, Any] = {
            "uri": self.uri if self.server else None,
            "collection": self.collection,
            "index_type": self.index_type,
            "token_env": self.token_env,
            "insert_batch": self.insert_batch,
        }
        if self.index_type == "IVF_FLAT":
            params.update(nlist=self.nlist, nprobe=self.nprobe)
        if self.index_type == "HNSW":
            params.update(M=self.M, ef_construction=self.ef_construction, ef_search=self.ef_search)
        return params

    def add(self, vectors: np.ndarray, labels: Sequence[str | None] | None = None) -> None:
        """Append ``(N, D)`` rows (rows ``ntotal .. ntotal + N - 1``), with their labels (a
        field a search can filter on; None where unknown)."""
        prepared = self._check(vectors, "vectors")
        if labels is not None and len(labels) != prepared.shape[0]:
            raise ValueError(f"got {len(labels)} labels for {prepared.shape[0]} vectors")
        self._insert(prepared, labels)

    def _add(self, vectors: np.ndarray) -> None:
        self._insert(vectors, None)

    def search(
        self, queries: np.ndarray, k: int, labels: Sequence[str] | None = None
    ) -> SearchResult:
        """The ``k`` best rows for each of ``(Q, D)`` queries, best first, padded as
        :meth:`Index.search` says.

        Args:
            queries: ``(Q, D)`` query rows.
            k: Neighbours per query, at most 16384 (Milvus's limit).
            labels: Keep only rows whose label is one of these (a Milvus filter); None keeps all.
        """
        if int(k) < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        prepared = self._check(queries, "queries")
        if self.ntotal == 0:
            raise ValueError(f"cannot search an empty {self.kind} index; add gallery vectors first")
        expression = "" if labels is None else store.label_filter(labels)
        scores, indices = self._search_where(prepared, int(k), expression)
        return SearchResult(scores, indices, self.metric.higher_is_better)

    def _search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return self._search_where(queries, k, "")

    def _search_where(
        self, queries: np.ndarray, k: int, expression: str
    ) -> tuple[np.ndarray, np.ndarray]:
        """Scores and rows ``(Q, k)`` of the best rows passing the filter ``expression``."""
        limit = min(k, self.ntotal)
        if limit > MAX_TOPK:
            raise ValueError(
                f"Milvus returns at most {MAX_TOPK} neighbours per query, asked for {k}; ask for "
                "fewer or use the 'flat' index"
            )
        scores = np.full((queries.shape[0], k), self.metric.worst(), dtype=np.float32)
        indices = np.full((queries.shape[0], k), -1, dtype=np.int64)
        client = self._client()
        for start in range(0, queries.shape[0], QUERY_BATCH):
            batch = queries[start : start + QUERY_BATCH]
            hits = self._call(
                "search",
                client.search,
                self.collection,
                data=list(batch),
                limit=limit,
                anns_field=store.VECTOR_FIELD,
                search_params={"params": self._search_parameters(limit)},
                filter=expression,
            )
            for offset, row_hits in enumerate(hits):
                for column, hit in enumerate(row_hits):
                    scores[start + offset, column] = hit["distance"]
                    indices[start + offset, column] = hit[store.ROW_FIELD]
        if self.metric.name == "l2":
            scores = np.where(indices >= 0, np.sqrt(np.maximum(scores, 0.0)), scores)
        return scores.astype(np.float32, copy=False), indices

    # -- beyond the protocol: delete, stored rows, an empty copy --------------------------------

    def delete(self, rows: Sequence[int] | np.ndarray) -> None:
        """Remove ``rows`` from the collection; they are never returned again (row numbers of
        the others do not change, and ``ntotal`` still counts them)."""
        selected = self._row_numbers(rows)
        if selected.size:
            self._call("delete", self._client().delete, self.collection, ids=selected.tolist())

    def reconstruct(self, rows: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
        """``(R, D)`` float32 stored vectors of ``rows`` (all when None), L2-normalised for
        cosine.

        Raises:
            ValueError: A row is out of range or was deleted.
        """
        selected = self._row_numbers(rows)
        found: dict[int, list[float]] = {}
        client = self._client()
        for start in range(0, selected.size, MAX_TOPK):
            wanted = sorted(set(selected[start : start + MAX_TOPK].tolist()))
            for entity in self._call(
                "query", client.query, self.collection, ids=wanted,
                output_fields=[store.ROW_FIELD, store.VECTOR_FIELD],
            ):  # fmt: skip
                found[int(entity[store.ROW_FIELD])] = entity[store.VECTOR_FIELD]
        missing = [int(row) for row in selected if int(row) not in found]
        if missing:
            raise ValueError(f"rows {missing[:10]} of the milvus index were deleted")
        if selected.size == 0:
            return np.zeros((0, self.dim), np.float32)
        return np.asarray([found[int(row)] for row in selected], dtype=np.float32)

    def empty_copy(self) -> MilvusIndex:
        """A new, empty index with this one's settings (a new collection on a server)."""
        params = {**self.params, "collection": None if self.server else self.collection}
        return MilvusIndex(self.dim, self.metric, self.device, **params)

    def close(self) -> None:
        """Close the client and remove a private Lite database (the index is unusable after)."""
        self._disconnect()
        if self._workspace is not None:
            self._workspace.remove()

    # -- state --------------------------------------------------------------------------------

    def write_state(self, path: Path) -> None:
        """Write ``milvus.json`` (and a copy of a Lite database) into folder ``path``."""
        path.mkdir(parents=True, exist_ok=True)
        reference = {
            "format_version": FORMAT_VERSION,
            "collection": self.collection,
            "ntotal": self._next_row,
            "server_uri": self.uri if self.server else None,
            "database": None if self.server else store.LITE_DATABASE,
        }
        if not self.server:
            if self._connection is not None:
                # A Lite database is copied closed, so the copy is whole; reopened on next use.
                self._call("flush", self._connection.client.flush, self.collection)
                self._disconnect()
            if self._created:
                store.copy_database(self._lite_database(), path / store.LITE_DATABASE)
            else:
                reference["database"] = None
        elif self._connection is not None and self._created:
            self._call("flush", self._connection.client.flush, self.collection)
        (path / REFERENCE_FILE).write_text(json.dumps(reference, indent=2, sort_keys=True) + "\n")

    def read_state(self, path: Path) -> None:
        """Attach to the collection :meth:`write_state` described in folder ``path`` (a Lite
        database is copied to a private folder first)."""
        reference = store.read_reference(path / REFERENCE_FILE, _REBUILD)
        if reference["collection"] != self.collection:
            raise ArtefactError(
                f"{path / REFERENCE_FILE} names collection {reference['collection']!r} but the "
                f"folder's index.json names {self.collection!r}; {_REBUILD}"
            )
        self._next_row = int(reference["ntotal"])
        if self.server:
            self._created = True
        elif reference["database"] is None:
            self._created = False
            return
        else:
            saved = path / str(reference["database"])
            if not saved.exists():
                raise ArtefactError(f"{saved} is missing; {_REBUILD}")
            self.close()
            self._workspace = store.LiteWorkspace(self)
            self._database = self._workspace.database
            store.copy_database(saved, self._database)
            self._created = True
        client = self._client()
        try:
            dim, metric_type, index_type = store.collection_facts(client, self.collection)
        except ValueError as error:
            raise ArtefactError(f"{path}: {error}; {_REBUILD}") from None
        expected = store.MILVUS_METRICS[self.metric.name]
        # An HNSW collection under a folder saying FLAT would answer approximately as "exact".
        if dim != self.dim or metric_type != expected or index_type != self.index_type:
            raise ArtefactError(
                f"{path} holds a Milvus collection of dimension {dim}, metric {metric_type} and "
                f"index type {index_type}, but its folder describes dimension {self.dim}, metric "
                f"{expected} and index type {self.index_type}; {_REBUILD}"
            )

    # -- internals ----------------------------------------------------------------------------

    def _lite_database(self) -> Path:
        if self._database is None:
            self._workspace = store.LiteWorkspace(self)
            self._database = self._workspace.database
        return self._database

    def _client(self) -> Any:
        """The open client (connecting, and loading the collection, on first use)."""
        with self._connecting:
            if self._connection is None:
                uri = self.uri if self.server else str(self._lite_database())
                connection = store.connect(str(uri), self.token_env)
                if self._created:
                    self._call("load", connection.client.load_collection, self.collection)
                self._connection = connection
                # The client (and a Lite database's server) goes with the index at the latest.
                self._closer = weakref.finalize(self, connection.client.close)
            return self._connection.client

    def _disconnect(self) -> None:
        if self._closer is not None:
            self._closer()
            self._closer = None
        self._connection = None

    def _insert(self, vectors: np.ndarray, labels: Sequence[str | None] | None) -> None:
        client = self._client()
        if not self._created:
            self._call(
                "create collection", store.create_collection, client, self.collection, self.dim,
                self.metric.name, self.index_type, self._index_parameters(), not self.server,
            )  # fmt: skip
            self._created = True
        per_call = max(1, min(self.insert_batch, INSERT_BYTES // (4 * self.dim + 64)))
        for start in range(0, vectors.shape[0], per_call):
            block = vectors[start : start + per_call]
            rows = range(self._next_row, self._next_row + block.shape[0])
            block_labels = (
                [None] * block.shape[0]
                if labels is None
                else [None if v is None else str(v) for v in labels[start : start + per_call]]
            )
            # MilvusClient takes rows; pymilvus packs each call into columnar field data.
            entities = [
                {store.ROW_FIELD: row, store.VECTOR_FIELD: vector, store.LABEL_FIELD: label}
                for row, vector, label in zip(rows, block, block_labels)
            ]
            self._call("insert", client.insert, self.collection, entities)
            self._next_row += block.shape[0]
        if not self.server:
            # Milvus searches unsealed rows by brute force; sealing them builds the index asked
            # for, so a fresh index answers as it will once saved and loaded. (A server seals
            # on its own schedule and rate-limits flushes, so it is flushed only when saved.)
            self._call("flush", client.flush, self.collection)

    def _index_parameters(self) -> dict[str, int]:
        if self.index_type == "IVF_FLAT":
            return {"nlist": self.nlist}
        if self.index_type == "HNSW":
            return {"M": self.M, "efConstruction": self.ef_construction}
        return {}

    def _search_parameters(self, limit: int) -> dict[str, int]:
        if self.index_type == "IVF_FLAT":
            return {"nprobe": min(self.nprobe, self.nlist)}
        if self.index_type == "HNSW":
            return {"ef": max(self.ef_search, limit)}
        return {}

    def _call(self, what: str, function: Any, *args: Any, **kwargs: Any) -> Any:
        """Call pymilvus, turning its errors into one line naming the collection and URI."""
        try:
            return function(*args, **kwargs)
        except store.milvus_error() as error:
            where = self.uri if self.server else "Milvus Lite"
            raise ValueError(
                f"Milvus {what} on collection {self.collection!r} at {where} failed: "
                f"{store.one_line(error)}"
            ) from None
