"""``wise-ft``: the curve over alpha against evaluating each interpolated model directly, the
choice on validation, the CLI verb, and the training option."""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from lookalike.cli.main import app
from lookalike.models import create_embedder, load_embedder, save_embedder
from lookalike.models.wise_ft import wise_ft
from lookalike.pipeline.training import train
from lookalike.pipeline.wise_ft import RetrievalSet, retrieval_metrics_of, wise_ft_curve
from tiny_training import tiny_config, write_images

runner = CliRunner()


def two_models(tmp_path: Path) -> tuple[Path, Path]:
    start = create_embedder("timm:test_efficientnet_gn", weights=None, pool="gap", head="linear:8")
    start.preprocessing = replace(start.preprocessing, input_size=32)
    tuned = create_embedder("timm:test_efficientnet_gn", weights=None, pool="gap", head="linear:8")
    tuned.preprocessing = start.preprocessing
    return save_embedder(start, tmp_path / "start"), save_embedder(tuned, tmp_path / "tuned")


def test_curve_matches_direct_evaluation_and_validation_chooses(
    tmp_path: Path, image_folder: Path
) -> None:
    start, tuned = two_models(tmp_path)
    select = RetrievalSet("val", f"folder:{image_folder}")
    other = RetrievalSet("other", write_images(tmp_path / "colours"))
    outcome = wise_ft_curve(start, tuned, tmp_path / "wise", select, [other], alphas=[0, 0.5, 1])
    assert [row["alpha"] for row in outcome.rows] == [0.0, 0.5, 1.0]
    middle = wise_ft(load_embedder(start), load_embedder(tuned), 0.5)
    direct = retrieval_metrics_of(middle, other.load())
    assert outcome.rows[1]["other/map@r"] == pytest.approx(direct["map@r"])
    best = max(outcome.rows, key=lambda row: (row["val/map@r"], row["alpha"]))
    assert outcome.best_alpha == best["alpha"]
    chosen = load_embedder(outcome.model_dir)
    images = torch.randn(2, 3, 32, 32)
    expected = wise_ft(load_embedder(start), load_embedder(tuned), outcome.best_alpha)
    with torch.no_grad():
        torch.testing.assert_close(chosen(images), expected(images))
    with open(outcome.curve_csv, newline="") as handle:
        assert len(list(csv.DictReader(handle))) == 3
    assert outcome.curve_plot.stat().st_size > 0
    assert json.loads((tmp_path / "wise" / "wise_ft.json").read_text())["best_alpha"] == best["alpha"]


def test_cli_verb(tmp_path: Path, image_folder: Path) -> None:
    start, tuned = two_models(tmp_path)
    result = runner.invoke(app, ["wise-ft", str(start), str(tuned), "--val-source", str(image_folder),
                                 "-o", str(tmp_path / "w"), "--alpha", "0", "--alpha", "1",
                                 "--report-source", f"ood={image_folder}"])
    assert result.exit_code == 0, result.output
    assert "chosen on validation" in result.output and (tmp_path / "w" / "curve.png").is_file()


@pytest.mark.slow
def test_training_option_evaluates_the_chosen_model(tmp_path: Path) -> None:
    config = tiny_config(write_images(tmp_path / "img"), tmp_path / "run", "trainer.max_epochs=1",
                         "wise_ft.enabled=true", "wise_ft.alphas=[0.0,1.0]")
    result = train(config, report=False)
    run = tmp_path / "run"
    assert (run / "pretrained" / "embedder.json").is_file()
    summary = json.loads((run / "wise_ft" / "wise_ft.json").read_text())
    assert summary["best_alpha"] in (0.0, 1.0) and summary["selected_on"] == "val"
    assert result.training.model_dir == run / "wise_ft" / "model"
    assert result.test is not None
