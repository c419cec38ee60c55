"""build_index / search_index: saved indexes answer like exact search and refuse other models."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from progress_recorder import recorder

from lookalike.embed.spec import EmbedSpec
from lookalike.embed.store import EmbeddingSet
from lookalike.models import create_embedder, save_embedder
from lookalike.models.spec import ModelSpec
from lookalike.pipeline.embedding import embed_images
from lookalike.pipeline.indexing import build_index, search_index


def _set(vectors: np.ndarray, prefix: str, fingerprint: str = "f00d") -> EmbeddingSet:
    ids = [f"{prefix}{i}" for i in range(len(vectors))]
    return EmbeddingSet(vectors, ids, [f"{i}.png" for i in ids], [str(i % 3) for i in range(len(vectors))], {"fingerprint": fingerprint})


@pytest.mark.parametrize("kind,params", [("flat", {}), ("ivf_flat", {"nlist": 4, "nprobe": 4}), ("hnsw", {"M": 16, "ef_search": 200})])
def test_saved_index_answers_like_exact_search(tmp_path: Path, kind: str, params: dict) -> None:
    rng = np.random.default_rng(0)
    gallery = rng.normal(size=(200, 8)).astype(np.float32)
    queries = rng.normal(size=(10, 8)).astype(np.float32)
    build_index(_set(gallery, "g"), tmp_path / "index", kind=kind, metric="l2", **params)
    outcome = search_index(tmp_path / "index", _set(queries, "q"), tmp_path / "r.csv", k=5)
    naive = np.argsort(((queries[:, None] - gallery[None]) ** 2).sum(-1), axis=1)[:, :5]
    assert (outcome.result.indices == naive).all()
    table = pd.read_csv(outcome.path)
    assert table["gallery_id"].tolist() == [f"g{i}" for i in naive.ravel()]


def test_threshold_stored_with_the_index_inserts_no_match(tmp_path: Path) -> None:
    gallery = np.eye(4, dtype=np.float32)
    queries = np.array([[1, 0, 0, 0], [0.6, 0.8, 0, 0]], dtype=np.float32)
    build_index(_set(gallery, "g"), tmp_path / "index", metric="cosine", threshold=0.7)
    assert json.loads((tmp_path / "index" / "index.json").read_text())["extra"] == {"threshold": 0.7}
    outcome = search_index(tmp_path / "index", _set(queries, "q"), tmp_path / "r.csv", k=2)
    table = pd.read_csv(outcome.path, keep_default_na=False)
    assert table["gallery_id"].tolist() == ["g0", "no_match", "g1", "no_match"]
    assert outcome.threshold == pytest.approx(0.7)
    outcome = search_index(tmp_path / "index", _set(queries, "q"), tmp_path / "r2.csv", k=2, use_threshold=False)
    assert "no_match" not in outcome.path.read_text() and outcome.threshold is None
    outcome = search_index(tmp_path / "index", _set(queries, "q"), tmp_path / "r3.csv", k=2, threshold=0.5)
    assert pd.read_csv(outcome.path)["gallery_id"].tolist() == ["g0", "no_match", "g1", "g0"]


def test_queries_from_another_model_are_refused(tmp_path: Path) -> None:
    gallery = np.eye(4, dtype=np.float32)
    build_index(_set(gallery, "g", "aaaa"), tmp_path / "index")
    with pytest.raises(ValueError, match="fingerprint"):
        search_index(tmp_path / "index", _set(gallery, "q", "bbbb"), tmp_path / "r.csv")


def test_exclude_self_drops_the_query_itself(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    vectors = rng.normal(size=(20, 6)).astype(np.float32)
    build_index(_set(vectors, "x"), tmp_path / "index", metric="l2")
    outcome = search_index(tmp_path / "index", _set(vectors, "x"), tmp_path / "r.csv", k=3, exclude_self=True)
    distances = ((vectors[:, None] - vectors[None]) ** 2).sum(-1)
    np.fill_diagonal(distances, np.inf)
    assert (outcome.result.indices == np.argsort(distances, axis=1)[:, :3]).all()


def test_folders_in_k_clamped_and_progress_counts_queries(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(7, 5)).astype(np.float32)
    _set(vectors, "x").save(tmp_path / "emb")
    built, folder = build_index(tmp_path / "emb", tmp_path / "index", metric="l2")
    assert built.ntotal == 7 and folder == tmp_path / "index"
    steps: list[tuple[str, int, list[int]]] = []
    outcome = search_index(folder, tmp_path / "emb", tmp_path / "r.json", k=50, exclude_self=True,
                           progress=recorder(steps))
    distances = ((vectors[:, None] - vectors[None]) ** 2).sum(-1)
    np.fill_diagonal(distances, np.inf)
    expected = np.argsort(distances, axis=1)
    expected[:, -1] = -1  # the own row, dropped, leaves the last of 7 columns empty
    assert outcome.result.k == 7 and (outcome.result.indices == expected).all()
    assert steps == [("searching", 7, [7])] and outcome.queries.ids == [f"x{i}" for i in range(7)]
    assert all(len(ranked) == 6 for ranked in json.loads(outcome.path.read_text()).values())


def test_bad_results_suffix_fails_before_reading_anything(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"unknown suffix '\.txt'"):
        search_index(tmp_path / "no_index", "/no/such/images", tmp_path / "r.txt")
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    return save_embedder(create_embedder("timm:resnet18", pool="gap", weights=None), tmp_path / "model")


def test_query_images_are_embedded_without_writing_beside_the_results(
    image_folder: Path, model_dir: Path, tmp_path: Path
) -> None:
    model = ModelSpec(checkpoint=str(model_dir))
    embed = EmbedSpec(batch_size=5, num_workers=0, device="cpu")
    gallery = embed_images(image_folder, tmp_path / "emb", model=model, embed=embed)
    build_index(gallery, tmp_path / "index")
    (tmp_path / "out").mkdir()
    steps: list[tuple[str, int, list[int]]] = []
    outcome = search_index(tmp_path / "index", image_folder, tmp_path / "out" / "r.csv", k=1,
                           model=model, embed=embed, progress=recorder(steps))
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["r.csv"]
    top1 = pd.read_csv(outcome.path)
    assert (top1["query_id"] == top1["gallery_id"]).all()  # every image finds itself first
    np.testing.assert_allclose(outcome.queries.embeddings, gallery.embeddings, atol=1e-5)
    assert steps == [("embedding all", 12, [5, 5, 2]), ("searching", 12, [12])]
    kept = search_index(tmp_path / "index", image_folder, tmp_path / "out" / "r2.csv", k=1,
                        model=model, embed=embed, query_embeddings_dir=tmp_path / "kept")
    assert EmbeddingSet.load(tmp_path / "kept").ids == kept.queries.ids == gallery.ids


def test_query_images_of_another_model_are_refused_before_embedding(
    image_folder: Path, model_dir: Path, tmp_path: Path
) -> None:
    embed = EmbedSpec(num_workers=0, device="cpu")
    gallery = embed_images(image_folder, None, model=ModelSpec(checkpoint=str(model_dir)), embed=embed)
    build_index(gallery, tmp_path / "index")
    other = ModelSpec("timm:resnet18", pool="max", weights="none")
    with pytest.raises(ValueError, match="fingerprint"):
        search_index(tmp_path / "index", image_folder, tmp_path / "r.csv", model=other, embed=embed,
                     query_embeddings_dir=tmp_path / "kept")
    assert not (tmp_path / "kept").exists() and not (tmp_path / "r.csv").exists()


def test_rows_that_would_rank_wrongly_are_refused_before_writing(tmp_path: Path) -> None:
    gallery = np.random.default_rng(0).normal(size=(20, 4)).astype(np.float32)
    gallery[7] = 0.0
    with pytest.raises(ValueError, match="the gallery embeddings: row 7 is all zeros"):
        build_index(_set(gallery, "g"), tmp_path / "cosine")
    assert not (tmp_path / "cosine").exists()
    build_index(_set(gallery, "g"), tmp_path / "l2", metric="l2")  # a zero row is fine for l2
    _set(gallery, "g").save(tmp_path / "emb")
    with pytest.raises(ValueError, match=r"emb/embeddings.npy: row 7 is all zeros"):
        build_index(tmp_path / "emb", tmp_path / "cosine")
    queries = np.ones((3, 4), np.float32)
    queries[1] = np.nan
    with pytest.raises(ValueError, match="the query embeddings: row 1 holds NaN"):
        search_index(tmp_path / "l2", _set(queries, "q"), tmp_path / "r.csv")
    assert not (tmp_path / "r.csv").exists()
    build_index(_set(np.eye(4, dtype=np.float32), "g"), tmp_path / "unit")
    with pytest.raises(ValueError, match="the query embeddings: row 0 is all zeros"):
        search_index(tmp_path / "unit", _set(np.zeros((2, 4), np.float32), "q"), tmp_path / "r.csv")
