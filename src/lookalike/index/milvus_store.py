"""Where a ``milvus`` index's data lives: an embedded Milvus Lite database or a Milvus server.

Milvus Lite (``pymilvus`` with ``milvus-lite``) keeps a collection in a local database, a folder
named ``*.db``; a server or cluster is reached by URI (``http://host:19530``) with a token read
from an environment variable, never stored. This module hides that difference from
:mod:`lookalike.index.milvus_index`: it imports pymilvus lazily (only when the kind is used),
opens clients, creates the collection with its index, and keeps the working copy of a Lite
database that an index folder's saved copy is opened from (the saved copy itself is never
opened, so the folder's manifest stays true).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import uuid
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lookalike.utils.folders import ArtefactError

INSTALL_HINT = "pip install 'lookalike[milvus]'"
SERVER_SCHEMES = ("http://", "https://", "tcp://", "grpc://", "unix:")
DEFAULT_TOKEN_ENV = "MILVUS_TOKEN"
ROW_FIELD = "row"
VECTOR_FIELD = "vector"
LABEL_FIELD = "label"
LABEL_MAX_LENGTH = 65_535  # Milvus's largest VARCHAR
LITE_DATABASE = "catalogue.db"

# lookalike metric -> Milvus metric_type. Cosine rows are L2-normalised before they reach Milvus,
# so COSINE and IP agree on them; COSINE is kept so the collection says what it is.
MILVUS_METRICS = {"cosine": "COSINE", "ip": "IP", "l2": "L2"}
INDEX_TYPES = ("FLAT", "IVF_FLAT", "HNSW")


def import_pymilvus() -> Any:
    """The ``pymilvus`` module, or a one-line ``ValueError`` saying how to install it (a
    ValueError, as for the other extras, so the command line prints it as one line)."""
    try:
        import pymilvus
    except ImportError as error:
        raise ValueError(
            f"the milvus index needs pymilvus and milvus-lite ({error}); {INSTALL_HINT}"
        ) from None
    return pymilvus


def milvus_error() -> type[Exception]:
    """pymilvus's base exception class (for ``except`` clauses)."""
    return import_pymilvus().exceptions.MilvusException


def is_server_uri(uri: str | None) -> bool:
    """Whether ``uri`` names a Milvus server (``http://``, ``https://``, ``tcp://`` ...)."""
    return uri is not None and uri.lower().startswith(SERVER_SCHEMES)


def new_collection_name() -> str:
    """A collection name no other index uses (``lookalike_`` and 12 hex digits)."""
    return f"lookalike_{uuid.uuid4().hex[:12]}"


@dataclass
class Connection:
    """An open client and what it is connected to.

    Attributes:
        client: The ``pymilvus.MilvusClient``.
        uri: The server URI, or the Lite database folder.
        lite: Whether it is a Milvus Lite database.
    """

    client: Any
    uri: str
    lite: bool


class _UnimplementedProbes(logging.Filter):
    """Drops the gRPC server's log of a method Milvus Lite does not implement.

    pymilvus probes such methods (``AllocTimestamp`` while waiting for an index) and ignores
    the "unimplemented" answer, but the in-process Lite server logs each probe as an ERROR
    with a traceback, which would reach the user's terminal.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return not isinstance(error, NotImplementedError)


_GRPC_SERVER_LOGGER = logging.getLogger("grpc._server")
if not any(isinstance(f, _UnimplementedProbes) for f in _GRPC_SERVER_LOGGER.filters):
    _GRPC_SERVER_LOGGER.addFilter(_UnimplementedProbes())


def connect(uri: str, token_env: str, timeout: float | None = None) -> Connection:
    """Open a client to a Milvus server (``token_env`` holds its token) or a Lite database.

    Raises:
        ValueError: pymilvus is not installed (saying how to install it), or the server or
            database cannot be reached (naming the URI).
    """
    pymilvus = import_pymilvus()
    lite = not is_server_uri(uri)
    kwargs: dict[str, Any] = {"uri": uri}
    if not lite:
        token = os.environ.get(token_env, "")
        if token:
            kwargs["token"] = token
        if timeout is not None:
            kwargs["timeout"] = timeout
    try:
        client = pymilvus.MilvusClient(**kwargs)
    except (pymilvus.exceptions.MilvusException, OSError, RuntimeError) as error:
        what = "Milvus Lite database" if lite else "Milvus server"
        hint = (
            f"check the path and that milvus-lite is installed ({INSTALL_HINT})"
            if lite
            else f"check the URI, that the server is up, and the token in ${token_env}"
        )
        raise ValueError(f"cannot open the {what} at {uri}: {one_line(error)}; {hint}") from None
    return Connection(client, uri, lite)


def create_collection(
    client: Any,
    name: str,
    dim: int,
    metric: str,
    index_type: str,
    index_params: dict[str, int],
    lite: bool,
) -> None:
    """Create collection ``name``: an INT64 primary key ``row`` (the index's row number), a
    ``dim``-wide float vector with a ``index_type`` index built with ``index_params``, and a
    nullable VARCHAR ``label``.

    Raises:
        ValueError: The collection exists already (one line naming it).
    """
    pymilvus = import_pymilvus()
    if client.has_collection(name):
        raise ValueError(
            f"Milvus collection {name!r} already exists; pass another collection name (or "
            "none, for a new one) or drop it first"
        )
    schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field(ROW_FIELD, pymilvus.DataType.INT64, is_primary=True)
    schema.add_field(VECTOR_FIELD, pymilvus.DataType.FLOAT_VECTOR, dim=dim)
    schema.add_field(
        LABEL_FIELD, pymilvus.DataType.VARCHAR, max_length=LABEL_MAX_LENGTH, nullable=True
    )
    prepared = client.prepare_index_params()
    settings = {"metric_type": MILVUS_METRICS[metric], "params": index_params}
    if lite:
        prepared.append(_lite_index_param(pymilvus, index_type, settings))
    else:
        prepared.add_index(field_name=VECTOR_FIELD, index_type=index_type, **settings)
    # Strong consistency: a search right after an insert sees it, as with every other kind.
    client.create_collection(name, schema=schema, index_params=prepared, consistency_level="Strong")


def _lite_index_param(pymilvus: Any, index_type: str, settings: dict[str, Any]) -> Any:
    """The vector field's index for Milvus Lite, its build parameters also sent whole.

    pymilvus 3 sends build parameters as separate keys (``nlist``, ``M``), which a server reads,
    but Milvus Lite reads them only from the JSON ``params`` key of the older wire format, and
    otherwise builds with its defaults (``nlist`` 128) whatever was asked for.
    """
    build = dict(settings["params"])

    class LiteIndexParam(pymilvus.milvus_client.index.IndexParam):  # type: ignore[misc,name-defined]
        def get_index_configs(self) -> dict[str, Any]:
            return {**super().get_index_configs(), "params": build}

    return LiteIndexParam(VECTOR_FIELD, index_type, "", **settings)


def collection_facts(client: Any, name: str) -> tuple[int, str, str]:
    """The vector width, Milvus metric type and index type of collection ``name``.

    Raises:
        ValueError: The collection does not exist.
    """
    if not client.has_collection(name):
        raise ValueError(f"Milvus collection {name!r} does not exist")
    described = client.describe_collection(name)
    dim = next(
        int(field["params"]["dim"])
        for field in described["fields"]
        if field["name"] == VECTOR_FIELD
    )
    described_index = client.describe_index(name, VECTOR_FIELD)
    metric_type = str(described_index.get("metric_type", ""))
    return dim, metric_type.upper(), str(described_index.get("index_type", "")).upper()


class LiteWorkspace:
    """A private folder holding the working copy of a Milvus Lite database.

    Removed when :meth:`remove` is called or the owner is garbage-collected (whichever first).
    """

    def __init__(self, owner: object) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="lookalike-milvus-"))
        self._finalizer = weakref.finalize(owner, shutil.rmtree, self.folder, True)

    @property
    def database(self) -> Path:
        return self.folder / LITE_DATABASE

    def remove(self) -> None:
        self._finalizer()


def copy_database(source: Path, target: Path) -> None:
    """Copy a (closed) Lite database: a folder (milvus-lite 3), leaving out its lock file, or a
    single file (milvus-lite 2)."""
    if source.is_dir():
        shutil.copytree(source, target, ignore=shutil.ignore_patterns("LOCK"))
    else:
        shutil.copy2(source, target)


def one_line(error: BaseException) -> str:
    """An error's message on one line."""
    message = getattr(error, "message", None) or str(error) or type(error).__name__
    return " ".join(str(message).split())


def label_filter(labels: Sequence[str]) -> str:
    """A Milvus boolean expression keeping rows whose label is one of ``labels``."""
    if isinstance(labels, str):
        labels = [labels]
    quoted = ", ".join(json.dumps(str(label), ensure_ascii=False) for label in labels)
    return f"{LABEL_FIELD} in [{quoted}]"


def read_reference(path: Path, fix: str) -> dict[str, Any]:
    """The ``milvus.json`` of an index folder's state, its fields checked (``fix``: what to do)."""
    try:
        reference = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ArtefactError(f"cannot read {path}: {error}; {fix}") from None
    required = ("collection", "ntotal", "database")
    if not isinstance(reference, dict) or any(key not in reference for key in required):
        raise ArtefactError(f"{path} lacks {', '.join(required)}; {fix}")
    if not isinstance(reference["ntotal"], int) or reference["ntotal"] < 0:
        raise ArtefactError(f"{path}: ntotal must be a non-negative integer; {fix}")
    return reference
