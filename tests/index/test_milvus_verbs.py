"""Every verb that takes an index works unchanged with a milvus index: the same files as FAISS
flat gives (index, search, evaluate, tune-threshold, submission, the server)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("pymilvus", reason="needs lookalike[milvus]")

from lookalike.embed.store import EmbeddingSet
from lookalike.index import IndexSpec, exact_search, load_index
from lookalike.pipeline.evaluate import EvaluateConfig, run_evaluation
from lookalike.pipeline.indexing import build_index, search_index
from lookalike.pipeline.submission import write_submission

DIM = 16


def _clusters() -> tuple[EmbeddingSet, EmbeddingSet]:
    """12 classes of 5 gallery rows (unit vectors) and 2 labelled queries per class."""
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(12, DIM))
    unit = lambda x: (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    gallery = unit(np.concatenate([c + 0.7 * rng.normal(size=(5, DIM)) for c in centres]))
    queries = unit(np.concatenate([c + 0.7 * rng.normal(size=(2, DIM)) for c in centres]))
    g_ids, q_ids = [f"g{i}" for i in range(60)], [f"q{i}" for i in range(24)]
    info = {"fingerprint": "beef"}
    return (
        EmbeddingSet(queries, q_ids, [f"/q/{i}.jpg" for i in q_ids], [f"c{i // 2}" for i in range(24)], info),
        EmbeddingSet(gallery, g_ids, [f"/g/{i}.jpg" for i in g_ids], [f"c{i // 5}" for i in range(60)], info),
    )


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("verbs")
    query, gallery = _clusters()
    query.save(root / "q")
    gallery.save(root / "g")
    folders = {}
    for kind in ("flat", "milvus"):
        index, folders[kind] = build_index(root / "g", root / f"index_{kind}", kind=kind)
        assert index.ntotal == 60
    return {"root": root, "query": query, "gallery": gallery, **folders}


def _frame(path: Path) -> pd.DataFrame:
    return pd.read_csv(path).sort_values(["query_id", "rank"]).reset_index(drop=True)


def test_index_and_search_give_flats_results(built) -> None:
    root = built["root"]
    outcomes = {
        kind: search_index(built[kind], root / "q", root / f"results_{kind}.csv", k=7)
        for kind in ("flat", "milvus")
    }
    milvus, flat = _frame(outcomes["milvus"].path), _frame(outcomes["flat"].path)
    pd.testing.assert_frame_equal(milvus.drop(columns="score"), flat.drop(columns="score"))
    np.testing.assert_allclose(milvus["score"], flat["score"], atol=1e-5)
    _, metadata = load_index(built["milvus"], expected_fingerprint="beef")
    assert metadata.labels == built["gallery"].labels  # labels are also fields of the collection


def test_search_with_another_models_embeddings_is_refused(built, tmp_path: Path) -> None:
    query = built["query"]
    other = EmbeddingSet(query.embeddings, query.ids, query.paths, query.labels, {"fingerprint": "f00d"})
    with pytest.raises(ValueError, match="fingerprint"):
        search_index(built["milvus"], other, tmp_path / "r.csv", k=3)


def test_evaluate_with_index_kind_milvus_serves_the_exact_lists(built, tmp_path, monkeypatch) -> None:
    from lookalike.index.milvus_index import MilvusIndex

    searched: list[int] = []
    original = MilvusIndex.search
    monkeypatch.setattr(MilvusIndex, "search", lambda self, q, k, labels=None: searched.append(len(q)) or original(self, q, k, labels))
    root = built["root"]
    runs = {}
    for kind in ("flat", "milvus"):
        config = EvaluateConfig(
            query_embeddings=str(root / "q"), gallery_embeddings=str(root / "g"),
            index=IndexSpec(kind=kind), output=str(tmp_path / kind), report=False, k=5,
        )  # fmt: skip
        runs[kind] = run_evaluation(config)
    assert sum(searched) == 24  # the milvus run's served lists came from Milvus
    assert runs["milvus"].metrics == runs["flat"].metrics
    milvus, flat = _frame(runs["milvus"].results_path), _frame(runs["flat"].results_path)
    assert milvus["gallery_id"].tolist() == flat["gallery_id"].tolist()


def test_tune_threshold_stores_it_and_search_applies_it(built, tmp_path: Path) -> None:
    from lookalike.pipeline.open_set import RejectionSpec, tune_and_save_threshold

    root = built["root"]
    folders = {kind: Path(shutil.copytree(built[kind], tmp_path / kind)) for kind in ("flat", "milvus")}
    tuned = {
        kind: tune_and_save_threshold(root / "q", root / "g", RejectionSpec(objective="map@5"),
                                      output=tmp_path / f"tuned_{kind}", index=folder)
        for kind, folder in folders.items()
    }  # fmt: skip
    assert tuned["milvus"].outcome.threshold == pytest.approx(tuned["flat"].outcome.threshold)
    _, metadata = load_index(folders["milvus"])
    assert metadata.threshold == pytest.approx(tuned["flat"].outcome.threshold)
    found = {
        kind: search_index(folder, root / "q", tmp_path / f"r_{kind}.csv", k=5)
        for kind, folder in folders.items()
    }
    assert found["milvus"].threshold == pytest.approx(found["flat"].threshold)
    milvus, flat = _frame(found["milvus"].path), _frame(found["flat"].path)
    assert milvus["gallery_id"].fillna("").tolist() == flat["gallery_id"].fillna("").tolist()


def test_submission_equals_flats(built, tmp_path: Path) -> None:
    root = built["root"]
    written = {
        kind: write_submission(built[kind], root / "q", tmp_path / f"{kind}.csv", k=5, threshold=0.5)
        for kind in ("flat", "milvus")
    }
    assert (tmp_path / "milvus.csv").read_text() == (tmp_path / "flat.csv").read_text()
    assert written["milvus"].threshold == 0.5


def test_cli_index_kind_milvus(built, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from lookalike.cli.main import app

    output = tmp_path / "cli_index"
    args = ["index", str(built["root"] / "g"), "-o", str(output), "--kind", "milvus",
            "--metric", "l2", "-p", "index_type=HNSW", "-p", "M=8"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "milvus index of 60 vectors" in " ".join(result.output.split())
    stored = json.loads((output / "index.json").read_text())
    assert stored["params"]["index_type"] == "HNSW" and stored["params"]["M"] == 8
    bad = CliRunner().invoke(app, [*args[:6], "--metric", "l1", "-o", str(tmp_path / "l1")])
    assert bad.exit_code != 0 and "does not support metric 'l1'" in " ".join(bad.output.split())
    assert "Traceback" not in bad.output


def test_server_searches_adds_deletes_and_compacts_a_milvus_index(built, tmp_path: Path) -> None:
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from lookalike.serve import ServeSettings, create_app

    folder = Path(shutil.copytree(built["milvus"], tmp_path / "index"))
    gallery, query = built["gallery"], built["query"]
    app = create_app(folder, model=None, settings=ServeSettings(token="", device="cpu", batch_wait_ms=1.0))
    with TestClient(app) as client:
        def top(vector: np.ndarray, k: int = 5, **extra: Any) -> list[str]:
            answer = client.post("/api/search/vector", json={"vector": vector.tolist(), "k": k, **extra})
            assert answer.status_code == 200, answer.text
            return [hit["id"] for hit in answer.json()["results"][0]["hits"] if hit["id"]]

        reference = exact_search(query.embeddings[:1], gallery.embeddings, 5, "cosine")
        assert top(query.embeddings[0]) == [gallery.ids[i] for i in reference.indices[0]]
        assert all(hit.startswith("g") for hit in top(query.embeddings[0], label="c3"))
        assert top(query.embeddings[0], label="c3") == [f"g{i}" for i in _rank_within(query, gallery, 0, "c3")]
        added = client.post("/api/items/vectors", json={"items": [
            {"id": "new", "label": "c0", "vector": query.embeddings[0].tolist()}]})  # fmt: skip
        assert added.status_code == 201, added.text
        assert top(query.embeddings[0])[0] == "new"
        first = [gallery.ids[i] for i in reference.indices[0]]
        assert client.delete(f"/api/items/{first[0]}").status_code == 200
        assert first[0] not in top(query.embeddings[0], k=10)
        compacted = client.post("/api/admin/compact")
        assert compacted.status_code == 200, compacted.text
        assert compacted.json()["rows"] == 60 and compacted.json()["dropped"] == 1
        after = top(query.embeddings[0], k=5)
    assert after == ["new", *first[1:5]]
    index, metadata = load_index(folder)
    assert index.kind == "milvus" and index.ntotal == 60 and first[0] not in metadata.ids


def _rank_within(query: EmbeddingSet, gallery: EmbeddingSet, row: int, label: str) -> list[int]:
    rows = np.array([i for i, v in enumerate(gallery.labels) if v == label])
    order = exact_search(query.embeddings[row : row + 1], gallery.embeddings[rows], 5, "cosine")
    return [int(rows[i]) for i in order.indices[0] if i >= 0]
