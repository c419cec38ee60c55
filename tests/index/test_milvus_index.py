"""The milvus index kind: Milvus Lite (and a recorded server) against exact search and FAISS.

Milvus Lite takes about a second to open a database, so the indexes are built once per module.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pymilvus = pytest.importorskip("pymilvus", reason="needs lookalike[milvus]")

from lookalike.index import create_index, exact_search, load_index, save_index
from lookalike.index import milvus_index as milvus_module
from lookalike.index.io import set_index_threshold
from lookalike.index.milvus_index import MilvusIndex

DIM = 24
LABELS = ['plain', 'with "quotes"', "it's", "back\\slash", "ünï"]


@pytest.fixture(scope="module")
def data() -> dict[str, Any]:
    rng = np.random.default_rng(7)
    gallery = rng.normal(size=(600, DIM)).astype(np.float32)
    queries = rng.normal(size=(40, DIM)).astype(np.float32)
    labels: list[str | None] = [None if i % 7 == 0 else LABELS[i % len(LABELS)] for i in range(600)]
    return {"gallery": gallery, "queries": queries, "labels": labels}


@pytest.fixture(scope="module")
def flat_indexes(data: dict[str, Any]) -> Iterator[dict[str, MilvusIndex]]:
    built = {}
    for metric in ("cosine", "ip", "l2"):
        index = create_index("milvus", DIM, metric)
        index.add(data["gallery"][:250], labels=data["labels"][:250])
        index.add(data["gallery"][250:], labels=data["labels"][250:])  # rows keep counting
        built[metric] = index
    yield built
    for index in built.values():
        index.close()


@pytest.mark.parametrize("metric", ["cosine", "ip", "l2"])
def test_flat_equals_exact_search_in_the_metrics_own_sense(flat_indexes, data, metric: str) -> None:
    index = flat_indexes[metric]
    assert index.ntotal == 600
    found = index.search(data["queries"], 10)
    reference = exact_search(data["queries"], data["gallery"], 10, metric)
    np.testing.assert_array_equal(found.indices, reference.indices)
    np.testing.assert_allclose(found.scores, reference.scores, rtol=1e-4, atol=1e-4)
    assert found.higher_is_better == (metric != "l2")


def test_k_beyond_the_gallery_is_padded(flat_indexes, data) -> None:
    found = flat_indexes["l2"].search(data["queries"][:2], 605)
    assert (found.indices[:, 600:] == -1).all() and np.isinf(found.scores[:, 600:]).all()
    assert sorted(found.indices[0, :600].tolist()) == list(range(600))
    assert (np.diff(found.scores[:, :600], axis=1) >= 0).all()


@pytest.mark.parametrize("label", [LABELS[0], LABELS[1], LABELS[2], LABELS[3], LABELS[4]])
def test_label_filter_equals_exact_search_over_that_labels_rows(flat_indexes, data, label) -> None:
    rows = np.array([i for i, v in enumerate(data["labels"]) if v == label])
    found = flat_indexes["cosine"].search(data["queries"], 5, labels=[label])
    reference = exact_search(data["queries"], data["gallery"][rows], 5, "cosine")
    np.testing.assert_array_equal(found.indices, rows[reference.indices])


def test_several_labels_filter_together(flat_indexes, data) -> None:
    wanted = {LABELS[0], LABELS[2]}
    rows = np.array([i for i, v in enumerate(data["labels"]) if v in wanted])
    found = flat_indexes["ip"].search(data["queries"], 8, labels=sorted(wanted))
    reference = exact_search(data["queries"], data["gallery"][rows], 8, "ip")
    np.testing.assert_array_equal(found.indices, rows[reference.indices])


def test_identical_top10_to_faiss_flat(data) -> None:
    """The small version of the 100k comparison below."""
    faiss_index = create_index("flat", DIM, "l2")
    faiss_index.add(data["gallery"])
    index = create_index("milvus", DIM, "l2")
    index.add(data["gallery"])
    np.testing.assert_array_equal(
        index.search(data["queries"], 10).indices, faiss_index.search(data["queries"], 10).indices
    )
    index.close()


@pytest.mark.slow
def test_identical_top10_to_faiss_flat_on_100k_vectors() -> None:
    rng = np.random.default_rng(0)
    gallery = rng.normal(size=(100_000, 128)).astype(np.float32)
    queries = rng.normal(size=(50, 128)).astype(np.float32)
    faiss_index = create_index("flat", 128, "cosine")
    faiss_index.add(gallery)
    index = create_index("milvus", 128, "cosine")
    index.add(gallery)
    found, reference = index.search(queries, 10), faiss_index.search(queries, 10)
    np.testing.assert_array_equal(found.indices, reference.indices)
    np.testing.assert_allclose(found.scores, reference.scores, atol=1e-5)
    index.close()


@pytest.mark.parametrize(
    ("index_type", "cheap", "thorough"),
    [
        ("IVF_FLAT", {"nlist": 32, "nprobe": 1}, {"nlist": 32, "nprobe": 32}),
        ("HNSW", {"M": 4, "ef_construction": 16, "ef_search": 10},
         {"M": 16, "ef_construction": 200, "ef_search": 400}),
    ],
)  # fmt: skip
def test_approximate_types_reach_milvus_with_their_parameters(index_type, cheap, thorough) -> None:
    """Milvus builds the type asked for with the parameters given: a cheap setting loses
    neighbours, a thorough one (every cell; a wide HNSW beam) finds the exact top 10.

    Milvus Lite attaches the index it builds in the background a moment after the rows are
    sealed, answering exactly until then; the cheap setting is searched until it has.
    """
    rng = np.random.default_rng(1)
    gallery = rng.normal(size=(4000, 32)).astype(np.float32)
    queries = rng.normal(size=(60, 32)).astype(np.float32)
    reference = exact_search(queries, gallery, 10, "cosine").indices

    def recall(index: MilvusIndex) -> float:
        found = index.search(queries, 10).indices
        return float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, reference)]))

    recalls = []
    waited = 0.0
    for params in (cheap, thorough):
        index = create_index("milvus", 32, "cosine", index_type=index_type.lower(), **params)
        index.add(gallery)
        described = index._client().describe_index(index.collection, "vector")
        assert described["index_type"] == index_type and described["metric_type"] == "COSINE"
        if params is cheap:
            start = time.monotonic()
            while recall(index) >= 0.6 and time.monotonic() - start < 30:
                time.sleep(0.2)
            waited = time.monotonic() - start
        else:
            time.sleep(waited + 0.5)
        recalls.append(recall(index))
        index.close()
    assert recalls[0] < 0.6 and recalls[1] >= 0.98, recalls


def test_l1_is_refused_naming_the_kinds_that_support_it() -> None:
    with pytest.raises(ValueError, match="does not support metric 'l1'.*flat") as error:
        create_index("milvus", DIM, "l1")
    assert "milvus" not in str(error.value).split("do:")[1]


@pytest.mark.parametrize(
    ("params", "message"),
    [({"index_type": "DISKANN"}, "unknown Milvus index_type"), ({"nlist": 0}, "nlist must be"),
     ({"device": "cuda"}, "cuda")],
)
def test_bad_settings_are_one_line_errors(params, message) -> None:
    with pytest.raises(ValueError, match=message):
        create_index("milvus", DIM, "cosine", **params)


def test_missing_pymilvus_says_how_to_install(flat_indexes, tmp_path, monkeypatch) -> None:
    folder = save_index(flat_indexes["ip"], tmp_path / "index", [str(i) for i in range(600)])
    monkeypatch.setitem(sys.modules, "pymilvus", None)
    with pytest.raises(ValueError, match=r"pip install 'lookalike\[milvus\]'"):
        create_index("milvus", DIM, "cosine")
    with pytest.raises(ValueError, match=r"pip install 'lookalike\[milvus\]'"):
        load_index(folder)


def test_delete_removes_rows_from_every_later_search(data) -> None:
    index = create_index("milvus", DIM, "l2")
    index.add(data["gallery"][:200])
    first = index.search(data["queries"][:5], 3).indices[:, 0]
    index.delete(first)
    kept = np.setdiff1d(np.arange(200), first)
    found = index.search(data["queries"][:5], 3)
    reference = exact_search(data["queries"][:5], data["gallery"][kept], 3, "l2")
    np.testing.assert_array_equal(found.indices, kept[reference.indices])
    assert index.ntotal == 200
    np.testing.assert_array_equal(index.reconstruct(kept[:4]), data["gallery"][kept[:4]])
    with pytest.raises(ValueError, match="deleted"):
        index.reconstruct(first[:1])
    with pytest.raises(ValueError, match=r"rows must lie in \[0, 200\)"):
        index.delete([200])
    index.close()


def test_too_deep_a_search_is_refused(flat_indexes, data, monkeypatch) -> None:
    monkeypatch.setattr(milvus_module, "MAX_TOPK", 20)
    with pytest.raises(ValueError, match="at most 20 neighbours"):
        flat_indexes["cosine"].search(data["queries"][:1], 21)


def test_saved_folder_holds_the_database_and_reloads(flat_indexes, data, tmp_path: Path) -> None:
    index = flat_indexes["cosine"]
    ids = [f"img{i}" for i in range(600)]
    folder = save_index(index, tmp_path / "index", ids, labels=data["labels"], fingerprint="abc")
    assert (folder / "milvus" / "milvus.json").is_file()
    assert (folder / "milvus" / "catalogue.db").is_dir()
    manifest = json.loads((folder / "manifest.json").read_text())
    assert any(name.startswith("milvus/catalogue.db/") for name in manifest["files"])
    before = index.search(data["queries"], 10)  # the saved index still works after saving
    for _ in range(2):  # a loaded copy works on its own copy: the folder still verifies
        loaded, metadata = load_index(folder, expected_fingerprint="abc")
        found = loaded.search(data["queries"], 10)
        np.testing.assert_array_equal(found.indices, before.indices)
        filtered = loaded.search(data["queries"], 3, labels=[LABELS[1]])
        assert all(data["labels"][row] == LABELS[1] for row in filtered.indices.ravel())
        assert metadata.kind == "milvus" and metadata.ids == ids
        loaded.close()
    # a stored threshold rebuilds the folder from linked files only; it must still open
    set_index_threshold(folder, 0.3)
    loaded, metadata = load_index(folder)
    assert metadata.threshold == pytest.approx(0.3)
    np.testing.assert_array_equal(loaded.search(data["queries"], 10).indices, before.indices)
    loaded.close()


def test_damaged_reference_is_a_one_line_error(flat_indexes, tmp_path: Path) -> None:
    from lookalike.utils.folders import write_manifest

    folder = save_index(flat_indexes["l2"], tmp_path / "index", [str(i) for i in range(600)])
    reference = folder / "milvus" / "milvus.json"
    stored = json.loads(reference.read_text())
    reference.write_text(json.dumps({**stored, "collection": "other"}))
    index_json = json.loads((folder / "index.json").read_text())
    write_manifest(folder, "index", None, {k: index_json[k] for k in ("kind", "metric", "dim", "ntotal")})
    with pytest.raises(ValueError, match="names collection 'other'"):
        load_index(folder)


# -- the server path, against a recorded server ------------------------------------------------


class RecordedServer:
    """Stands in for ``pymilvus.MilvusClient`` at ``http://`` URIs: records each client's URI,
    token and calls, and answers them with a real Milvus Lite database per URI."""

    def __init__(self, root: Path, real_client: type) -> None:
        self.root, self.real_client = root, real_client
        self.connections: list[dict[str, Any]] = []
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
        self.databases: dict[str, Any] = {}

    def __call__(self, uri: str, token: str = "", **kwargs: Any) -> Any:
        assert uri.startswith("http://"), uri
        self.connections.append({"uri": uri, "token": token, **kwargs})
        if uri not in self.databases:
            self.databases[uri] = self.real_client(uri=str(self.root / f"server{len(self.databases)}.db"))
        server = self

        class Client:
            def __getattr__(self, name: str) -> Any:
                method = getattr(server.databases[uri], name)

                def record(*args: Any, **kw: Any) -> Any:
                    server.calls.append((name, args, kw))
                    return method(*args, **kw)

                return record

            def close(self) -> None:  # the server stays up; this client goes
                server.calls.append(("close", (), {}))

        return Client()

    def names(self) -> list[str]:
        return [name for name, _, _ in self.calls]


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> RecordedServer:
    recorded = RecordedServer(tmp_path / "server", pymilvus.MilvusClient)
    (tmp_path / "server").mkdir()
    monkeypatch.setattr(pymilvus, "MilvusClient", recorded)
    monkeypatch.setenv("MILVUS_TOKEN", "s3cret-token")
    return recorded


def test_server_uri_builds_saves_a_reference_and_reloads(server, data, tmp_path: Path) -> None:
    uri = "http://milvus.example:19530"
    index = create_index("milvus", DIM, "l2", uri=uri, insert_batch=128)
    index.add(data["gallery"], labels=data["labels"])
    assert server.connections[0]["uri"] == uri and server.connections[0]["token"] == "s3cret-token"
    assert index.collection.startswith("lookalike_")
    created = next(kw for name, _, kw in server.calls if name == "create_collection")
    assert created["consistency_level"] == "Strong"
    inserts = [args[1] for name, args, _ in server.calls if name == "insert"]
    assert [len(rows) for rows in inserts] == [128] * 4 + [88]  # 600 rows in batches of 128
    assert [row["row"] for rows in inserts for row in rows] == list(range(600))
    assert inserts[0][1]["label"] == data["labels"][1]
    found = index.search(data["queries"], 10)
    reference = exact_search(data["queries"], data["gallery"], 10, "l2")
    np.testing.assert_array_equal(found.indices, reference.indices)
    np.testing.assert_allclose(found.scores, reference.scores, rtol=1e-4, atol=1e-4)

    folder = save_index(index, tmp_path / "index", [str(i) for i in range(600)], labels=data["labels"])
    assert "flush" in server.names()
    saved = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    assert saved == {"index.json", "manifest.json", "records.parquet", "milvus/milvus.json"}
    for path in folder.rglob("*.json"):
        assert "s3cret" not in path.read_text()
    reference_file = json.loads((folder / "milvus" / "milvus.json").read_text())
    assert reference_file["server_uri"] == uri and reference_file["database"] is None
    assert json.loads((folder / "index.json").read_text())["params"]["uri"] == uri

    loaded, _ = load_index(folder)
    assert server.connections[-1]["token"] == "s3cret-token"
    assert "load_collection" in server.names() and "create_collection" not in server.names()[-3:]
    np.testing.assert_array_equal(loaded.search(data["queries"], 10).indices, found.indices)
    copy = loaded.empty_copy()
    assert copy.collection != loaded.collection and copy.uri == uri


def test_server_token_comes_from_the_variable_named(server, data, monkeypatch) -> None:
    monkeypatch.setenv("OTHER_TOKEN", "other")
    index = create_index("milvus", DIM, "ip", uri="http://milvus.example:19530", token_env="OTHER_TOKEN")
    index.add(data["gallery"][:10])
    assert server.connections[-1]["token"] == "other"


def test_unreachable_server_is_a_one_line_error_naming_the_uri(data, monkeypatch) -> None:
    def refuse(uri: str, **kwargs: Any) -> Any:
        raise pymilvus.exceptions.MilvusException(message="Fail connecting to server on x:1,\n server unavailable")

    monkeypatch.setattr(pymilvus, "MilvusClient", refuse)
    index = create_index("milvus", DIM, "l2", uri="http://x:1")
    with pytest.raises(ValueError, match=r"^cannot open the Milvus server at http://x:1: .*\$MILVUS_TOKEN$") as error:
        index.add(data["gallery"][:3])
    assert "\n" not in str(error.value)
