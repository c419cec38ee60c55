"""metric=auto on index and evaluate: chosen on validation, stored, used by search, reported."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from metric_choice_problem import l1_wins_problem, naive_map_at_r
from typer.testing import CliRunner

from lookalike.cli.main import app
from lookalike.embed.store import EmbeddingSet
from lookalike.index.io import read_index_metadata
from lookalike.pipeline.evaluate import EvaluateConfig, run_evaluation
from lookalike.pipeline.indexing import build_index, search_index
from lookalike.pipeline.metric_choice import stored_metric_choice
from lookalike.report.run_folder import load_run_folder
from lookalike.report.sections import metrics_section


def _set(vectors: np.ndarray, labels: list[str], prefix: str) -> EmbeddingSet:
    ids = [f"{prefix}{i}" for i in range(len(vectors))]
    return EmbeddingSet(vectors, ids, [f"{i}.png" for i in ids], list(labels), {"fingerprint": "f00d"})


def test_index_auto_stores_the_choice_and_search_uses_it(tmp_path: Path) -> None:
    vectors, labels = l1_wins_problem(seed=0)
    val = _set(vectors, labels, "v")
    (tmp_path / "val").mkdir()
    val.save(tmp_path / "val")
    gallery_vectors, gallery_labels = l1_wins_problem(seed=3)
    index, folder = build_index(
        _set(gallery_vectors, gallery_labels, "g"), tmp_path / "index", metric="auto",
        validation=tmp_path / "val",
    )
    assert index.metric.name == "l1"
    assert read_index_metadata(folder)["metric"] == "l1"
    choice = stored_metric_choice(folder)
    assert choice is not None and choice.metric == "l1" and choice.split == "val"
    assert choice.scores["l2"]["map@r"] == pytest.approx(naive_map_at_r(vectors, labels, "l2"), abs=1e-6)
    queries = gallery_vectors[:5] + 0.01
    outcome = search_index(folder, _set(queries, gallery_labels[:5], "q"), tmp_path / "r.csv", k=3)
    naive = np.argsort(np.abs(queries[:, None] - gallery_vectors[None]).sum(-1), axis=1, kind="stable")[:, :3]
    assert (outcome.result.indices == naive).all()


def test_index_auto_needs_validation_and_refuses_another_model(tmp_path: Path) -> None:
    vectors, labels = l1_wins_problem()
    with pytest.raises(ValueError, match="metric 'auto' chooses on validation embeddings"):
        build_index(_set(vectors, labels, "g"), tmp_path / "a", metric="auto")
    with pytest.raises(ValueError, match="used by metric 'auto' only, not 'l2'"):
        build_index(_set(vectors, labels, "g"), tmp_path / "b", metric="l2", validation=_set(vectors, labels, "v"))
    other = _set(vectors, labels, "v")
    other.info["fingerprint"] = "beef"
    with pytest.raises(ValueError, match="come from model beef but the gallery from f00d"):
        build_index(_set(vectors, labels, "g"), tmp_path / "c", metric="auto", validation=other)
    assert not (tmp_path / "a").exists() and not (tmp_path / "c").exists()


def test_cli_index_auto_prints_all_four(tmp_path: Path) -> None:
    vectors, labels = l1_wins_problem()
    _set(vectors, labels, "v").save(tmp_path / "val")
    _set(vectors, labels, "g").save(tmp_path / "gallery")
    result = CliRunner().invoke(app, [
        "index", str(tmp_path / "gallery"), "-o", str(tmp_path / "index"), "--metric", "auto",
        "--val-embeddings", str(tmp_path / "val"),
    ])
    assert result.exit_code == 0, result.output
    for metric in ("cosine", "ip", "l2", "l1"):
        assert metric in result.output
    assert "metric auto: l1" in result.output


def test_evaluate_auto_chooses_on_the_val_split_and_reports_it(tmp_path: Path) -> None:
    vectors, labels = l1_wins_problem(classes=12)
    _set(vectors, labels, "x").save(tmp_path / "emb")
    config = EvaluateConfig(
        embeddings=str(tmp_path / "emb"), protocol="class_disjoint",
        protocol_args={"train_fraction": 0.5, "val_fraction": 0.5}, output=str(tmp_path / "run"),
        report=False,  # the full report is slow; its metric-choice table is built below
    )
    config.index.metric = "auto"
    outcome = run_evaluation(config)
    val_labels = [f"c{c}" for c in range(3, 6)]  # natural order: c0..c5 train, the last 3 val
    rows = [i for i, label in enumerate(labels) if label in val_labels]
    val_vectors, val_row_labels = vectors[rows], [labels[i] for i in rows]
    naive = {m: naive_map_at_r(val_vectors, val_row_labels, m) for m in ("cosine", "ip", "l2", "l1")}
    choice = outcome.metric_choice
    assert choice is not None and choice.split == "val" and choice.n_queries == len(rows)
    assert choice.metric == max(naive, key=naive.get)
    for metric, value in naive.items():
        assert choice.scores[metric]["map@r"] == pytest.approx(value, abs=1e-6)
    stored = json.loads((tmp_path / "run" / "metric_choice.json").read_text())
    assert stored["metric"] == choice.metric
    assert json.loads((tmp_path / "run" / "run.json").read_text())["metric"] == choice.metric
    test_rows = [i for i, label in enumerate(labels) if int(label[1:]) >= 6]
    expected = naive_map_at_r(vectors[test_rows], [labels[i] for i in test_rows], choice.metric)
    assert outcome.metrics["map@r"] == pytest.approx(expected, abs=1e-6)
    html = metrics_section(load_run_folder(tmp_path / "run"))
    assert 'id="metric-choice-table"' in html and "on the val split" in html
    assert all(f">{metric}</td>" in html for metric in ("cosine", "ip", "l2", "l1"))


def test_evaluate_auto_without_val_says_it_chose_on_test(tmp_path: Path) -> None:
    vectors, labels = l1_wins_problem()
    _set(vectors, labels, "x").save(tmp_path / "emb")
    result = CliRunner().invoke(app, [
        "evaluate", "--embeddings", str(tmp_path / "emb"), "--protocol", "all_vs_all",
        "--metric", "auto", "-o", str(tmp_path / "run"), "report=false",
    ])
    assert result.exit_code == 0, result.output
    choice = json.loads((tmp_path / "run" / "metric_choice.json").read_text())
    assert choice["split"] == "test" and "optimistic" in choice["note"]
    assert "metric auto: l1" in result.output
