"""``predict`` and ``tune-threshold --classifier``: class answers of a saved model with its head,
against probabilities computed by hand, and the CLI verbs over them."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from lookalike.cli.main import app
from lookalike.embed.store import EmbeddingSet
from lookalike.models import create_embedder, load_embedder, save_embedder
from lookalike.models.classifier import Classifier, model_classifier_folder, save_classifier
from lookalike.models.embedder import Embedder
from lookalike.pipeline.embedding import embed_images
from lookalike.pipeline.predict import PredictSpec, predict, tune_class_threshold
from lookalike.report.submission import read_kaggle_csv

CLASSES = ["cat", "dog", "fox"]
runner = CliRunner()


@pytest.fixture
def model(tmp_path: Path) -> Path:
    """A tiny saved model with a 3-class softmax head."""
    embedder = create_embedder("timm:test_efficientnet_gn", weights=None, head="linear:8").eval()
    embedder.preprocessing = replace(embedder.preprocessing, input_size=32)
    folder = save_embedder(embedder, tmp_path / "model")
    classifier = Classifier("linear", 8, 3, "softmax", classes=CLASSES)
    with torch.no_grad():
        classifier.head.linear.weight.mul_(20)
    save_classifier(classifier.eval(), model_classifier_folder(folder), embedder.fingerprint())
    return folder


def naive_rows(probabilities: np.ndarray, k: int, threshold: float | None) -> list[list[str]]:
    rows = []
    for row in probabilities:
        ranked = sorted(range(len(row)), key=lambda c: (-row[c], c))[:k]
        names = [CLASSES[c] for c in ranked]
        if threshold is not None:
            position = next((i for i, c in enumerate(ranked) if row[c] < threshold), len(ranked))
            names.insert(position, "no_match")
        rows.append(names[:k])
    return rows


def head_probabilities(model: Path, queries: EmbeddingSet) -> np.ndarray:
    from lookalike.models.classifier import load_model_classifier

    classifier = load_model_classifier(model)
    with torch.no_grad():
        return classifier.probabilities(torch.from_numpy(queries.embeddings)).numpy()


@pytest.mark.parametrize("threshold", [None, 0.5])
def test_predict_writes_the_top_classes_of_the_head(
    model: Path, image_folder: Path, tmp_path: Path, threshold: float | None
) -> None:
    queries = embed_images(image_folder, tmp_path / "q", model=load_model(model))
    outcome = predict(model, image_folder, tmp_path / "answers.csv",
                      PredictSpec(k=3, threshold=threshold))
    expected = naive_rows(head_probabilities(model, queries), 3, threshold)
    table = read_kaggle_csv(tmp_path / "answers.csv")
    assert [table[query_id] for query_id in queries.ids] == expected
    assert outcome.query_ids == queries.ids
    # the embedding folder gives the same answers as the images
    again = predict(model, tmp_path / "q", None, PredictSpec(k=3))
    np.testing.assert_array_equal(again.answers.result.indices, outcome.answers.result.indices)


def load_model(folder: Path) -> Embedder:
    return load_embedder(folder)


def test_knn_and_fusion_answers(model: Path, image_folder: Path, tmp_path: Path) -> None:
    gallery = embed_images(image_folder, tmp_path / "g", model=load_model(model))
    spec = PredictSpec(by="knn", k=2, neighbours=3, temperature=0.1)
    knn = predict(model, tmp_path / "g", None, spec, gallery=tmp_path / "g")
    # each image is its own nearest neighbour (similarity 1): votes lean to its own class
    top = [row[0] for row in knn.answers.labels()]
    assert sum(t == label for t, label in zip(top, gallery.labels, strict=True)) >= 10
    fused = predict(model, tmp_path / "g", None, replace(spec, by="fusion", vote_weight=0.5),
                    gallery=gallery)
    probabilities = head_probabilities(model, gallery)
    head_top = probabilities.max(axis=1)
    assert np.all(fused.answers.result.scores[:, 0] <= np.maximum(head_top, 1.0) + 1e-6)
    with pytest.raises(ValueError, match="need gallery embeddings"):
        predict(model, tmp_path / "g", None, spec)
    with pytest.raises(ValueError, match="unknown answer source 'tree'"):
        predict(model, tmp_path / "g", None, PredictSpec(by="tree"))


def test_a_model_without_head_cannot_answer_by_class(image_folder: Path, tmp_path: Path) -> None:
    embedder = create_embedder("timm:test_efficientnet_gn", weights=None)
    embedder.preprocessing = replace(embedder.preprocessing, input_size=32)
    save_embedder(embedder, tmp_path / "plain")
    with pytest.raises(FileNotFoundError, match="has no classifier"):
        predict(tmp_path / "plain", image_folder)


def test_tune_class_threshold_and_the_cli(model: Path, image_folder: Path, tmp_path: Path) -> None:
    queries = embed_images(image_folder, None, model=load_model(model))
    labels = list(queries.labels)
    labels[::3] = [None] * len(labels[::3])  # distractors
    tuned_set = EmbeddingSet(queries.embeddings, queries.ids, queries.paths, labels, queries.info)
    tuned_set.save(tmp_path / "val")
    saved = tune_class_threshold(model, tmp_path / "val", output=tmp_path / "threshold")
    outcome = saved.outcome
    assert outcome.metric == "probability" and outcome.value >= outcome.baseline
    assert (tmp_path / "threshold" / "threshold_curve.csv").is_file() and saved.plot.is_file()

    result = runner.invoke(app, ["tune-threshold", "--query-embeddings", str(tmp_path / "val"),
                                 "--classifier", str(model), "-o", str(tmp_path / "cli_threshold")])
    assert result.exit_code == 0, result.output
    assert f"{outcome.threshold:.4f}" in result.output
    result = runner.invoke(app, ["predict", str(model), str(tmp_path / "val"), "-o",
                                 str(tmp_path / "p.csv"), "-k", "2", "--threshold",
                                 str(outcome.threshold)])
    assert result.exit_code == 0, result.output
    table = read_kaggle_csv(tmp_path / "p.csv")
    probabilities = head_probabilities(model, tuned_set)
    assert [table[i] for i in tuned_set.ids] == naive_rows(probabilities, 2, outcome.threshold)
