"""After training: the exported model is scored on the test split and the report sees it all."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from lookalike.embed.store import EmbeddingSet
from lookalike.pipeline.training import train
from lookalike.report import build_report
from lookalike.runs import RunRecord
from lookalike.utils.folders import ArtefactError
from naive_metrics import naive_retrieval_metrics
from tiny_training import tiny_config, write_images


@pytest.mark.slow
def test_test_split_metrics_and_report_after_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "umap", None)  # PCA map: no numba compile
    images = write_images(tmp_path / "images")
    config = tiny_config(images, tmp_path / "run", "trainer.max_epochs=1")
    result = train(config, train_sample=10)
    outcome, evaluation = result.training, result.test
    assert evaluation is not None and result.report_path == outcome.output / "report.html"

    # The test split (class_disjoint: the last 2 of 8 classes, all against all), scored afresh
    # from the embeddings the test run wrote, by the naive reference.
    tested = json.loads((evaluation.output / "run.json").read_text())
    assert tested["exclude_self"] and tested["metric"] == "cosine"
    query = EmbeddingSet.load(evaluation.output / tested["query_embeddings"])
    gallery = EmbeddingSet.load(evaluation.output / tested["gallery_embeddings"])
    assert sorted(set(gallery.labels)) == ["c6", "c7"] and len(gallery) == 12
    assert set(query.ids) <= set(gallery.ids)
    expected = naive_retrieval_metrics(
        query.embeddings, query.labels, gallery.embeddings, gallery.labels,
        query_ids=query.ids, gallery_ids=gallery.ids,
    )
    assert expected["n_queries"] == 12 and expected["n_queries_without_positives"] == 0

    reported = json.loads((evaluation.output / "metrics.json").read_text())
    assert {key: reported[key] for key in expected} == pytest.approx(expected, abs=1e-6)
    assert {key: evaluation.metrics[key] for key in expected} == pytest.approx(expected, abs=1e-6)

    record = json.loads((outcome.output / "run.json").read_text())
    assert record["kind"] == "train"
    assert {key: record["test_metrics"][key] for key in expected} == pytest.approx(
        expected, abs=1e-6
    )
    sample = EmbeddingSet.load(outcome.output / record["train_embeddings"])
    assert len(sample) == 10 and set(sample.labels) <= {f"c{i}" for i in range(6)}
    page = build_report(outcome.output).read_text()
    assert "train" in page and "Recall@1 per class" in page and "needs labelled query" not in page

    # The finished folder's manifest, written last, covers everything, nested folders included.
    files = RunRecord(outcome.output).verify().files
    for name in ("run.json", "report.html", "checkpoints/last.ckpt", "model/model.safetensors",
                 "test/manifest.json", "test/ranking.npz", "embeddings/train/embeddings.npy"):
        assert name in files
    assert not [name for name in files if "partial" in name]
    # A rerun removes it first: an interrupted rerun is never taken for a finished run.
    RunRecord(outcome.output).unfinish()
    with pytest.raises(ArtefactError, match="manifest.json is missing"):
        build_report(outcome.output)
