"""The command line: verbs chain embed → index → search, and user errors are one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from lookalike.cli.main import app
from lookalike.embed.store import EmbeddingSet
from lookalike.models import create_embedder, save_embedder

runner = CliRunner()
TINY = ["--model", "timm:resnet18", "--weights", "none", "--pool", "gap", "--workers", "0", "--device", "cpu"]


def _invoke(*args: str) -> str:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


def test_every_verb_has_help() -> None:
    for verb in ("embed", "index", "search", "evaluate", "demo", "list"):
        assert "Usage" in _invoke(verb, "--help")


def test_embed_index_search_chain_matches_exact_ranking(image_folder: Path, tmp_path: Path) -> None:
    _invoke("embed", image_folder, "-o", tmp_path / "emb", *TINY, "--batch-size", "5")
    _invoke("index", tmp_path / "emb", "-o", tmp_path / "index", "--kind", "hnsw", "-p", "M=8", "-p", "ef_search=64")
    _invoke("search", tmp_path / "index", tmp_path / "emb", "-o", tmp_path / "r.json", "-k", "3", "--exclude-self")
    embeddings = EmbeddingSet.load(tmp_path / "emb")
    similarity = embeddings.embeddings @ embeddings.embeddings.T
    np.fill_diagonal(similarity, -np.inf)
    # Random-weight features of near-identical images are near-ties: compare the scores found.
    expected = -np.sort(-similarity, axis=1)[:, :3]
    ranking = json.loads((tmp_path / "r.json").read_text())
    row_of = {image_id: row for row, image_id in enumerate(embeddings.ids)}
    for row, query_id in enumerate(embeddings.ids):
        found = [similarity[row, row_of[entry["gallery_id"]]] for entry in ranking[query_id]]
        np.testing.assert_allclose(found, expected[row], atol=1e-5)
        np.testing.assert_allclose([entry["score"] for entry in ranking[query_id]], expected[row], atol=1e-5)


def test_search_embeds_query_images_with_the_index_model(image_folder: Path, tmp_path: Path) -> None:
    save_embedder(create_embedder("timm:resnet18", pool="gap", weights=None), tmp_path / "model")
    model = ["--checkpoint", tmp_path / "model", "--device", "cpu"]
    _invoke("embed", image_folder, "-o", tmp_path / "emb", *model, "--workers", "0")
    _invoke("index", tmp_path / "emb", "-o", tmp_path / "index")
    _invoke("search", tmp_path / "index", image_folder, "-o", tmp_path / "r.csv", "-k", "1", *model)
    top1 = pd.read_csv(tmp_path / "r.csv")
    assert (top1["query_id"] == top1["gallery_id"]).all()  # every image finds itself first


def test_search_refuses_queries_of_another_model(image_folder: Path, tmp_path: Path) -> None:
    _invoke("embed", image_folder, "-o", tmp_path / "emb", *TINY)
    _invoke("index", tmp_path / "emb", "-o", tmp_path / "index")
    other = ["--model", "timm:resnet18", "--weights", "none", "--pool", "max", "--device", "cpu"]
    result = runner.invoke(app, ["search", str(tmp_path / "index"), str(image_folder), "-o", str(tmp_path / "r.csv"), *other])
    assert result.exit_code == 2
    assert "fingerprint" in result.output and "Traceback" not in result.output


def test_evaluate_writes_metrics_json(image_folder: Path, tmp_path: Path) -> None:
    output = _invoke(
        "evaluate", "--source", image_folder, "--protocol", "all_vs_all", "-o", tmp_path / "run",
        "model.backbone=timm:resnet18", "model.weights=none", "embed.num_workers=0", "embed.device=cpu",
        "report=false",
    )
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["n_queries"] == 12
    assert f"{metrics['recall@1']:.4f}" in output


@pytest.mark.parametrize(
    "args,needle",
    [
        (["evaluate", "--source", "/no/such/folder"], "/no/such/folder"),
        (["evaluate", "not-an-override"], "not-an-override"),
        (["evaluate", "model.nope=1"], "model.nope"),
        (["index", "/no/such/embeddings", "-o", "/tmp/x"], "/no/such/embeddings"),
        (["search", "/no/such/index", "/no/such/q"], "/no/such"),
        (["embed", "/no/such/images", "-o", "/tmp/x"], "/no/such/images"),
    ],
)
def test_user_errors_are_one_line(
    args: list[str], needle: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # default outputs (runs/evaluate) land here, if anywhere
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], result.output


def _clusters(tmp_path: Path) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(10, 16))
    gallery = np.concatenate([c + 0.4 * rng.normal(size=(4, 16)) for c in centres])
    queries = np.concatenate([c + 0.4 * rng.normal(size=(2, 16)) for c in centres])
    g_ids, q_ids = [f"g{i}" for i in range(40)], [f"q{i}" for i in range(20)]
    EmbeddingSet(gallery, g_ids, g_ids, [str(i // 4) for i in range(40)]).save(tmp_path / "g")
    EmbeddingSet(queries, q_ids, q_ids, [str(i // 2) for i in range(20)]).save(tmp_path / "q")
    return tmp_path / "q", tmp_path / "g"


def test_tune_threshold_stores_it_in_the_index_for_search(tmp_path: Path) -> None:
    query, gallery = _clusters(tmp_path)
    _invoke("index", gallery, "-o", tmp_path / "index")
    _invoke("tune-threshold", "--query-embeddings", query, "--gallery-embeddings", gallery,
            "-o", tmp_path / "tuned", "--index", tmp_path / "index", "--holdout-fraction", "0.3")
    tuned = json.loads((tmp_path / "tuned" / "threshold.json").read_text())
    stored = json.loads((tmp_path / "index" / "index.json").read_text())["extra"]["threshold"]
    assert stored == pytest.approx(tuned["threshold"]) and len(tuned["held_out_classes"]) == 3
    _invoke("search", tmp_path / "index", query, "-o", tmp_path / "r.csv", "-k", "3")
    table = pd.read_csv(tmp_path / "r.csv", keep_default_na=False)
    scores = table["score"].replace("", np.nan).astype(float)
    # No accepted neighbour scores below the threshold; every list that rejects holds a no_match.
    ranked_before = table.groupby("query_id").apply(
        lambda g: (g["gallery_id"] == "no_match").cumsum().eq(0), include_groups=False
    ).to_numpy()
    assert (scores[ranked_before] >= tuned["threshold"] - 1e-6).all()


def test_evaluate_reports_post_processing_side_by_side(tmp_path: Path) -> None:
    query, gallery = _clusters(tmp_path)
    output = _invoke("evaluate", "--query-embeddings", query, "--gallery-embeddings", gallery,
                     "-o", tmp_path / "run", "postprocess.qe=true", "postprocess.depth=20", "report=false")
    variants = pd.read_csv(tmp_path / "run" / "variants.csv")
    assert variants["variant"].tolist() == ["baseline", "qe"]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert variants.loc[0, "recall@1"] == pytest.approx(metrics["recall@1"])
    assert "Post-processing" in output


def test_report_submission_and_submit_verbs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    query, gallery = _clusters(tmp_path)
    monkeypatch.setitem(__import__("sys").modules, "umap", None)  # PCA map: no numba compile
    _invoke("evaluate", "--query-embeddings", query, "--gallery-embeddings", gallery, "-o", tmp_path / "run")
    page = (tmp_path / "run" / "report.html").read_text()
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert f"{metrics['recall@1']:.4f}" in page
    _invoke("index", gallery, "-o", tmp_path / "index")
    _invoke("submission", tmp_path / "index", query, "-o", tmp_path / "sub.csv", "-k", "3", "--threshold", "0.5")
    table = pd.read_csv(tmp_path / "sub.csv")
    assert table.columns.tolist() == ["Id", "Predicted"] and len(table) == 20
    assert all(len(set(row.split())) == len(row.split()) <= 3 for row in table["Predicted"])
    monkeypatch.delenv("LOOKALIKE_SUBMIT_TOKEN", raising=False)
    result = runner.invoke(app, ["submit", str(tmp_path / "sub.csv"), "--url", "http://127.0.0.1:9/"])
    assert result.exit_code == 2 and "LOOKALIKE_SUBMIT_TOKEN" in result.output
