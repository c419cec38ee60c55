"""evaluate: metrics from the run folder agree with a naive loop over the saved embeddings."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from lookalike.embed.spec import EmbedSpec
from lookalike.embed.store import EmbeddingSet
from lookalike.models.spec import ModelSpec
from lookalike.pipeline.evaluate import EvaluateConfig, run_evaluation
from lookalike.runs import RunRecord

TINY_MODEL = ModelSpec(backbone="timm:resnet18", pool="gap", weights="none")


def _config(tmp_path: Path, **overrides: object) -> EvaluateConfig:
    config = EvaluateConfig(
        model=TINY_MODEL,
        embed=EmbedSpec(batch_size=8, num_workers=0, device="cpu"),
        output=str(tmp_path / "run"),
        report=False,
    )
    for key, value in overrides.items():
        setattr(config, key, value)
    return config


def _naive_recall_at_1(query: EmbeddingSet, gallery: EmbeddingSet, exclude_self: bool) -> float:
    hits = []
    for row, vector in enumerate(query.embeddings):
        best, best_score = None, -np.inf
        for column, other in enumerate(gallery.embeddings):
            if exclude_self and gallery.ids[column] == query.ids[row]:
                continue
            score = float(np.dot(vector, other))
            if score > best_score:
                best, best_score = column, score
        hits.append(gallery.labels[best] == query.labels[row])
    return float(np.mean(hits))


def test_per_class_split_metrics_match_a_naive_loop(image_folder: Path, tmp_path: Path) -> None:
    config = _config(
        tmp_path, source=str(image_folder), protocol="per_class", protocol_args={"query_fraction": 0.5}
    )
    outcome = run_evaluation(config)
    run = outcome.output
    query = EmbeddingSet.load(run / "embeddings" / "query")
    gallery = EmbeddingSet.load(run / "embeddings" / "gallery")
    assert len(query) == 6 and len(gallery) == 6
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics) >= {"recall@1", "recall@5", "recall@10", "precision@10", "map", "map@5", "map@r", "weighted_topk"}
    assert metrics["recall@1"] == pytest.approx(_naive_recall_at_1(query, gallery, False))
    results = pd.read_csv(run / "results.csv")
    assert results.groupby("query_id").size().max() == 6  # k=10 but only 6 gallery images
    assert (run / "config.yaml").is_file()
    info = json.loads((run / "run.json").read_text())
    assert info["query_embeddings"] == "embeddings/query" and info["exclude_self"] is False


def test_all_vs_all_excludes_self_and_keeps_distractors_wrong(image_folder: Path, tmp_path: Path) -> None:
    # An unlabelled image joins the gallery as a distractor: searched, never correct.
    (image_folder.parent / "extra").mkdir()
    manifest = tmp_path / "manifest.csv"
    rows = [f"{p},{p.parent.name}" for p in sorted(image_folder.rglob("*.png"))]
    Image.new("RGB", (32, 24), (200, 30, 30)).save(image_folder.parent / "extra" / "red.png")
    rows.append(f"{image_folder.parent / 'extra' / 'red.png'},")
    manifest.write_text("path,label\n" + "\n".join(rows) + "\n")
    outcome = run_evaluation(_config(tmp_path, source=str(manifest), protocol="all_vs_all"))
    run = outcome.output
    gallery = EmbeddingSet.load(run / "embeddings" / "all")
    query = EmbeddingSet.load(run / "embeddings" / "query")
    assert len(gallery) == 13 and len(query) == 12
    assert outcome.metrics["n_queries"] == 12
    assert outcome.metrics["recall@1"] == pytest.approx(_naive_recall_at_1(query, gallery, True))
    results = pd.read_csv(run / "results.csv")
    assert not (results["query_id"] == results["gallery_id"]).any()


def test_precomputed_embeddings_from_different_models_are_refused(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for name, fingerprint in (("q", "aaaa"), ("g", "bbbb")):
        EmbeddingSet(rng.normal(size=(3, 4)), ["1", "2", "3"], ["a", "b", "c"], ["x", "y", "x"], {"fingerprint": fingerprint}).save(tmp_path / name)
    config = _config(tmp_path, query_embeddings=str(tmp_path / "q"), gallery_embeddings=str(tmp_path / "g"))
    with pytest.raises(ValueError, match="different models"):
        run_evaluation(config)


def test_unlabelled_queries_give_results_without_metrics(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(5, 4)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    EmbeddingSet(vectors[:2], ["q1", "q2"], ["q1.png", "q2.png"], [None, None]).save(tmp_path / "q")
    EmbeddingSet(vectors[2:], ["g1", "g2", "g3"], ["g1.png", "g2.png", "g3.png"], [None] * 3).save(tmp_path / "g")
    outcome = run_evaluation(_config(tmp_path, query_embeddings=str(tmp_path / "q"), gallery_embeddings=str(tmp_path / "g"), k=2))
    assert outcome.metrics == {}
    assert not (outcome.output / "metrics.json").exists()
    results = pd.read_csv(outcome.results_path)
    expected = np.argsort(-(vectors[:2] @ vectors[2:].T), axis=1)[:, :2]
    got = results.sort_values(["query_id", "rank"])["gallery_id"].to_numpy().reshape(2, 2)
    assert (got == np.array([["g1", "g2", "g3"][i] for i in expected.ravel()]).reshape(2, 2)).all()


def test_one_embedding_folder_on_both_sides_excludes_self(tmp_path: Path) -> None:
    vectors = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]], dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    EmbeddingSet(vectors, list("abcd"), list("abcd"), ["x", "y", "y", "x"]).save(tmp_path / "all")
    folder = str(tmp_path / "all")
    outcome = run_evaluation(_config(tmp_path, query_embeddings=folder, gallery_embeddings=folder))
    # Without self-exclusion every query would find itself: recall@1 would be 1.
    assert outcome.metrics["recall@1"] == 0.0


def test_one_embedding_folder_is_split_by_the_protocol(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(24, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = [f"{c}/{i}.png" for c in "abcdef" for i in range(4)]
    EmbeddingSet(vectors, ids, ids, [i.split("/")[0] for i in ids]).save(tmp_path / "all")
    config = _config(tmp_path, embeddings=str(tmp_path / "all"), protocol="class_disjoint",
                     protocol_args={"train_fraction": 0.5})
    outcome = run_evaluation(config)
    # class_disjoint: the last 3 classes, each image against the others of them.
    test = EmbeddingSet.load(outcome.output / "embeddings" / "all")
    assert sorted(set(test.labels)) == ["d", "e", "f"] and len(test) == 12
    assert outcome.metrics["recall@1"] == pytest.approx(_naive_recall_at_1(test, test, True))


def test_a_killed_run_resumes_its_embeddings_and_the_folder_appears_whole(
    image_folder: Path, tmp_path: Path
) -> None:
    from lookalike.models import create_embedder
    from lookalike.utils.folders import partial_path

    torch.manual_seed(0)
    embedder = create_embedder("timm:resnet18", pool="gap", weights=None).eval()
    forward, calls = embedder.forward, []

    def counting(images: torch.Tensor) -> torch.Tensor:
        calls.append(len(images))
        if len(calls) == fail_on:
            raise RuntimeError("killed")
        return forward(images)

    embedder.forward = counting  # type: ignore[method-assign]
    settings = {"source": str(image_folder), "protocol": "all_vs_all",
                "embed": EmbedSpec(batch_size=2, shard_size=2, num_workers=0, device="cpu")}
    fail_on = 0
    reference = run_evaluation(_config(tmp_path / "ref", **settings), embedder)
    assert len(calls) == 6  # 12 images, batches (and shards) of 2

    calls.clear()
    fail_on = 4
    with pytest.raises(RuntimeError, match="killed"):
        run_evaluation(_config(tmp_path, **settings), embedder)
    run = tmp_path / "run"
    assert not run.exists()
    assert [p.name for p in partial_path(run).iterdir()] == ["embeddings"]  # only the work kept

    calls.clear()
    fail_on = 0
    resumed = run_evaluation(_config(tmp_path, **settings), embedder)
    assert len(calls) == 3  # the three unfinished shards
    assert resumed.metrics == reference.metrics
    assert not partial_path(run).exists()
    files = RunRecord(run).verify().files
    assert {"run.json", "metrics.json", "results.csv", "ranking.npz", "config.yaml",
            "embeddings/all/embeddings.npy", "embeddings/all/manifest.json"} <= set(files)

    calls.clear()
    again = run_evaluation(_config(tmp_path, **settings), embedder)  # over the finished run
    assert calls == [] and again.metrics == reference.metrics


def test_damaged_or_bad_precomputed_embeddings_leave_no_run(tmp_path: Path) -> None:
    rows = np.eye(4, dtype=np.float32)[[0, 0, 1, 1, 2, 2]]
    rows[3] = 0.0
    ids = [f"i{n}" for n in range(6)]
    EmbeddingSet(rows, ids, ids, ["a", "a", "b", "b", "c", "c"]).save(tmp_path / "emb")
    config = _config(tmp_path, embeddings=str(tmp_path / "emb"), protocol="all_vs_all")
    with pytest.raises(ValueError, match=r"emb embeddings: row 3 is all zeros"):
        run_evaluation(config)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["emb"]
    (tmp_path / "emb" / "records.parquet").write_bytes(b"PAR1")
    with pytest.raises(ValueError, match="records.parquet has 4 bytes"):
        run_evaluation(config)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["emb"]


def test_precision_and_recall_cut_offs_are_configurable(tmp_path: Path) -> None:
    from naive_metrics import naive_retrieval_metrics

    rng = np.random.default_rng(5)
    vectors = rng.normal(size=(30, 6)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = [f"{i:02d}" for i in range(30)]
    labels = [f"c{i % 4}" for i in range(30)]
    EmbeddingSet(vectors, ids, ids, labels).save(tmp_path / "all")
    folder = str(tmp_path / "all")
    outcome = run_evaluation(_config(tmp_path, query_embeddings=folder, gallery_embeddings=folder,
                                     recall_ks=[2, 3], precision_ks=[3, 7]))
    expected = naive_retrieval_metrics(vectors, labels, vectors, labels, query_ids=ids,
                                       gallery_ids=ids, ks=(2, 3), precision_ks=(3, 7))
    assert {key for key in outcome.metrics if key.startswith(("recall@", "precision@"))} == {
        "recall@2", "recall@3", "precision@3", "precision@7"}
    for key in ("recall@2", "recall@3", "precision@3", "precision@7", "map@r"):
        assert outcome.metrics[key] == pytest.approx(expected[key]), key


def test_a_bad_precision_cut_off_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    from lookalike.pipeline.evaluate_config import check_evaluate_config

    with pytest.raises(ValueError, match="precision_ks"):
        check_evaluate_config(_config(tmp_path, source="x", precision_ks=[0]))
