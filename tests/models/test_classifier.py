"""Classifier heads kept with a model: their logits, export from the losses, saving round trips."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from lookalike.losses import create_loss
from lookalike.models.classifier import (
    CLASSIFIER_HEADS,
    Classifier,
    load_classifier,
    load_model_classifier,
    save_classifier,
)
from lookalike.utils.folders import ArtefactError

D, C = 6, 4
CLASSES = ["ant", "bee", "cat", "dog"]


@pytest.mark.parametrize("kind", CLASSIFIER_HEADS.names())
@pytest.mark.parametrize("activation", ["softmax", "sigmoid"])
def test_save_and_load_give_identical_probabilities(
    kind: str, activation: str, tmp_path: Path
) -> None:
    options = {"hidden": [5, 3], "dropout": 0.2} if kind == "mlp" else {}
    classifier = Classifier(kind, D, C, activation, options, CLASSES)
    for module in classifier.modules():  # non-trivial BatchNorm statistics
        if isinstance(module, torch.nn.BatchNorm1d):
            module.running_mean.uniform_(-1, 1)
    classifier.eval()
    folder = save_classifier(classifier, tmp_path / "classifier", "f" * 16)
    loaded = load_classifier(folder, "f" * 16)
    rows = torch.randn(7, D)
    assert torch.equal(loaded.probabilities(rows), classifier.probabilities(rows))
    assert loaded.classes == CLASSES and loaded.activation == activation
    total = loaded.probabilities(rows).sum(dim=1)
    if activation == "softmax":
        torch.testing.assert_close(total, torch.ones(7))


def test_cosine_classifier_is_scaled_cosine() -> None:
    classifier = Classifier("cosine", D, C, options={"scale": 10.0})
    rows = torch.randn(3, D)
    weight = classifier.head.weight
    expected = [[10.0 * F.cosine_similarity(r, w, dim=0).item() for w in weight] for r in rows]
    torch.testing.assert_close(classifier(rows), torch.tensor(expected), rtol=1e-5, atol=1e-5)


def test_a_classifier_refuses_another_models_embeddings(tmp_path: Path) -> None:
    folder = save_classifier(Classifier("linear", D, C), tmp_path / "model" / "classifier", "a" * 16)
    with pytest.raises(ValueError, match="belongs to model aaaaaaaaaaaaaaaa"):
        load_classifier(folder, "b" * 16)
    assert load_model_classifier(tmp_path / "model", "a" * 16).num_classes == C
    (folder / "classifier.safetensors").write_bytes(b"damaged")
    with pytest.raises(ArtefactError):
        load_classifier(folder)
    with pytest.raises(FileNotFoundError, match="has no classifier"):
        load_model_classifier(tmp_path)


def test_bad_descriptions() -> None:
    with pytest.raises(ValueError, match="unknown classifier activation 'relu'"):
        Classifier("linear", D, C, "relu")
    with pytest.raises(ValueError, match="3 class names for a 4-class classifier"):
        Classifier("linear", D, C, classes=CLASSES[:3])
    with pytest.raises(ValueError, match="unknown classifier head 'tree'"):
        Classifier("tree", D, C)


@pytest.mark.parametrize(
    ("spec", "activation"),
    [
        ({"name": "cross_entropy"}, "softmax"),
        ({"name": "cross_entropy", "normalized": True, "scale": 8.0}, "softmax"),
        ({"name": "bce", "hidden": [8, 5], "dropout": 0.1}, "sigmoid"),
        ({"name": "arcface", "scale": 30.0}, "softmax"),
        ({"name": "proxy_anchor"}, "softmax"),
    ],
)
def test_exported_classifier_matches_the_loss(spec: dict, activation: str) -> None:
    loss = create_loss(spec, embedding_dim=D, num_classes=C).eval()
    with torch.no_grad():  # a trained-looking head: move every weight off its initialisation
        for parameter in loss.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    exported = loss.export_classifier(CLASSES)
    rows = F.normalize(torch.randn(5, D), dim=1)
    assert exported.activation == activation
    with torch.no_grad():
        torch.testing.assert_close(exported(rows), loss.class_logits(rows))
        torch.testing.assert_close(exported.probabilities(rows), loss.class_probabilities(rows))


def test_arcface_logits_are_the_centres_without_margin() -> None:
    loss = create_loss({"name": "arcface", "scale": 30.0}, embedding_dim=D, num_classes=C)
    rows = torch.randn(3, D)
    centres = loss.criterion.W  # (D, C)
    expected = [
        [30.0 * F.cosine_similarity(r, centres[:, c], dim=0).item() for c in range(C)]
        for r in rows
    ]
    torch.testing.assert_close(loss.class_logits(rows), torch.tensor(expected), rtol=1e-5, atol=1e-4)
