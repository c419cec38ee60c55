"""After training: the exported model is scored on the test split and the report sees it all."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from lookalike.embed.store import EmbeddingSet
from lookalike.metrics import evaluate_retrieval
from lookalike.pipeline.after_training import evaluate_trained_model
from lookalike.report import build_report
from lookalike.train.run import run_training

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "train"))
from test_run import tiny_config, write_images  # noqa: E402


@pytest.mark.slow
def test_test_split_metrics_and_report_after_training(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "umap", None)  # PCA map: no numba compile
    config = tiny_config(write_images(tmp_path / "images"), tmp_path / "run", "trainer.max_epochs=1")
    outcome = run_training(config)
    evaluation = evaluate_trained_model(config, outcome, train_sample=10)

    # The test split (class_disjoint: the last 2 of 8 classes, all against all) scored afresh.
    test = EmbeddingSet.load(evaluation.output / "embeddings" / "all")
    assert sorted(set(test.labels)) == ["c6", "c7"]
    expected = evaluate_retrieval(test.embeddings, test.labels, test.embeddings, test.labels, self_index=np.arange(len(test)))
    assert evaluation.metrics["map@r"] == pytest.approx(expected["map@r"])

    record = json.loads((outcome.output / "run.json").read_text())
    assert record["kind"] == "train" and record["test_metrics"]["map@r"] == pytest.approx(expected["map@r"])
    train = EmbeddingSet.load(outcome.output / record["train_embeddings"])
    assert len(train) == 10 and set(train.labels) <= {f"c{i}" for i in range(6)}
    page = build_report(outcome.output).read_text()
    assert "train" in page and "Recall@1 per class" in page and "needs labelled query" not in page
