"""The ablation table: each row is what its run folder says; blanks, not crashes, for what a run
lacks; a folder that is not a finished run is named in one line."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from lookalike.embed.spec import EmbedSpec
from lookalike.embed.store import EmbeddingSet
from lookalike.pipeline.evaluate import EvaluateConfig, run_evaluation
from lookalike.pipeline.training import train
from lookalike.report.compare import compare_runs
from lookalike.utils.folders import ArtefactError
from tiny_training import tiny_config, write_images


def _evaluate_run(tmp_path: Path, name: str, seed: int, map_at_k: int) -> Path:
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(24, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = [f"{c}/{i}.png" for c in "abcdef" for i in range(4)]
    folder = tmp_path / f"emb_{name}"
    EmbeddingSet(vectors, ids, ids, [i.split("/")[0] for i in ids]).save(folder)
    config = EvaluateConfig(embeddings=str(folder), protocol="all_vs_all", map_at_k=map_at_k,
                            embed=EmbedSpec(num_workers=0, device="cpu"),
                            output=str(tmp_path / "runs" / name), report=False)
    return run_evaluation(config).output


def _csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_rows_are_each_runs_metrics_and_missing_ones_are_blank(tmp_path: Path) -> None:
    first = _evaluate_run(tmp_path, "first", 0, map_at_k=5)
    second = _evaluate_run(tmp_path, "second", 1, map_at_k=3)
    result = compare_runs([first, second], tmp_path / "compare")

    rows = _csv(result.csv_path)
    assert [row["run"] for row in rows] == ["first", "second"]
    for row, folder in zip(rows, (first, second), strict=True):
        metrics = json.loads((folder / "metrics.json").read_text())
        numeric = {k: v for k, v in metrics.items() if isinstance(v, float | int)}
        assert {k: float(row[k]) for k in numeric} == pytest.approx(numeric)
        assert row["kind"] == "evaluate" and row["loss"] == "" and row["train_seconds"] == ""
    # MAP@5 only in the first run, MAP@3 only in the second: blank cells.
    assert rows[0]["map@5"] != "" and rows[1]["map@5"] == ""
    assert rows[1]["map@3"] != "" and rows[0]["map@3"] == ""
    assert result.columns[:10] == ["run", "kind", "model", "pooling", "head", "loss", "finetune",
                                   "recall@1", "map@r", "map"]
    page = result.html_path.read_text()
    assert page.count("<img") == 1 and "first" in page and "second" in page


def test_a_folder_that_is_not_a_finished_run_is_named(tmp_path: Path) -> None:
    run = _evaluate_run(tmp_path, "run", 0, map_at_k=5)
    stray = tmp_path / "not_a_run"
    stray.mkdir()
    with pytest.raises(ValueError, match=f"{stray} is not a run folder"):
        compare_runs([run, stray], tmp_path / "compare")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        compare_runs([tmp_path / "missing"], tmp_path / "compare")
    (run / "manifest.json").unlink()
    with pytest.raises(ArtefactError, match=str(run)):
        compare_runs([run], tmp_path / "compare")
    assert compare_runs([run], tmp_path / "compare", verify=False).rows[0]["run"] == "run"


def test_the_command_prints_one_line_for_a_stray_folder(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from lookalike.cli.main import app

    run = _evaluate_run(tmp_path, "run", 0, map_at_k=5)
    result = CliRunner().invoke(app, ["compare", str(run), "-o", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "compare.csv").is_file()
    result = CliRunner().invoke(app, ["compare", str(run), str(tmp_path)])
    assert result.exit_code == 2
    assert result.output.strip().count("\n") == 0 and "is not a run folder" in result.output


@pytest.mark.slow
def test_a_training_run_shows_its_recipe_test_and_val_metrics_and_times(tmp_path: Path) -> None:
    images = write_images(tmp_path / "images")
    trained = train(tiny_config(images, tmp_path / "runs" / "trained", "trainer.max_epochs=1"),
                    report=False, train_sample=4).training.output
    evaluated = _evaluate_run(tmp_path, "evaluated", 0, map_at_k=5)
    result = compare_runs([trained, evaluated], tmp_path / "compare")
    row = {key: value for key, value in result.rows[0].items()}
    record = json.loads((trained / "run.json").read_text())
    val = json.loads((trained / "metrics.json").read_text())
    assert row["run"] == "trained" and row["kind"] == "train"
    assert (row["model"], row["pooling"], row["head"]) == ("timm:test_efficientnet_gn", "auto",
                                                           "linear:16")
    assert (row["loss"], row["finetune"]) == ("arcface", "full")
    assert row["map@r"] == pytest.approx(record["test_metrics"]["map@r"])
    assert row["val/map@r"] == pytest.approx(val["map@r"])
    assert row["train_seconds"] == record["seconds_this_session"] > 0
    assert row["eval_seconds"] == record["test_seconds"] > 0
    other = _csv(result.csv_path)[1]
    assert other["val/map@r"] == "" and other["train_seconds"] == ""
    # Runs with validation metrics only (a sweep's trials, trained without a test) are charted
    # by those.
    alone = compare_runs([trained], tmp_path / "alone")
    assert alone.html_path.read_text().count("<img") == 1
