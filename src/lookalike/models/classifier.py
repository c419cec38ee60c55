"""Classifier heads on embeddings, and how they are kept with a saved model.

A :class:`Classifier` maps ``(N, D)`` embeddings to ``(N, C)`` logits and knows how its logits
become probabilities: ``"sigmoid"`` for a multi-label head trained with binary cross-entropy,
``"softmax"`` otherwise. Its layers are an entry of :data:`CLASSIFIER_HEADS`:

- ``"linear"``: ``x W^T + b``;
- ``"cosine"``: ``scale * cos(x, w_c)``, the normalised classifier of NormFace (Wang et al. 2017)
  and the class centres of ArcFace (Deng et al. 2019) read without their training margin;
- ``"mlp"``: hidden ``Linear -> [BatchNorm] -> activation -> Dropout`` layers, then ``Linear``.

A trained classifier is saved beside its embedder as ``<model>/classifier/``
(``classifier.safetensors``, ``classifier.json``, ``manifest.json``), tied to the embedder's
fingerprint so that it never scores embeddings of another model::

    save_classifier(classifier, "runs/train/model/classifier", embedder.fingerprint())
    classifier = load_model_classifier("runs/train/model", embedder.fingerprint())
    probabilities = classifier.probabilities(embeddings)     # (N, C)
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lookalike.models.heads import hidden_layers
from lookalike.registry import Registry
from lookalike.utils.folders import atomic_folder, verify_folder, write_manifest

CLASSIFIER_HEADS: Registry[nn.Module] = Registry("classifier head")
ACTIVATION_KINDS = ("softmax", "sigmoid")
CLASSIFIER_DIR = "classifier"
"""Sub-folder of a saved model holding its classifier."""
CLASSIFIER_WEIGHTS = "classifier.safetensors"
CLASSIFIER_CONFIG = "classifier.json"
CLASSIFIER_KIND = "classifier"
"""Artefact kind in the classifier folder's manifest."""


@CLASSIFIER_HEADS.register("linear")
class LinearClassifier(nn.Module):
    """``(N, D) -> (N, C)`` logits ``x W^T + b``."""

    def __init__(self, in_dim: int, num_classes: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_dim, num_classes)

    def forward(self, embeddings: Tensor) -> Tensor:
        return self.linear(embeddings)


@CLASSIFIER_HEADS.register("cosine")
class CosineClassifier(nn.Module):
    """``(N, D) -> (N, C)`` logits ``scale * cos(x, w_c)`` (Wang et al. 2017, NormFace).

    Args:
        in_dim: Embedding width ``D``.
        num_classes: ``C``.
        scale: Logit scale ``s`` (> 0).
    """

    def __init__(self, in_dim: int, num_classes: int, scale: float = 16.0) -> None:
        super().__init__()
        if not scale > 0:
            raise ValueError(f"cosine classifier scale must be > 0, got {scale}")
        self.weight = nn.Parameter(torch.empty(num_classes, in_dim))
        nn.init.xavier_uniform_(self.weight)
        self.scale = float(scale)

    def forward(self, embeddings: Tensor) -> Tensor:
        return self.scale * F.normalize(embeddings, dim=1) @ F.normalize(self.weight, dim=1).T


@CLASSIFIER_HEADS.register("mlp")
class MLPClassifier(nn.Module):
    """Hidden layers ``Linear -> [BatchNorm] -> activation -> Dropout``, then ``Linear`` to ``C``.

    Args:
        in_dim: Embedding width ``D``.
        num_classes: ``C``.
        hidden: Widths of the hidden layers (the issue's recipe: two, e.g. ``[512, 512]``).
        dropout: Dropout after each hidden activation.
        batchnorm: ``BatchNorm1d`` after each hidden ``Linear``.
        activation: A name of :data:`~lookalike.models.heads.ACTIVATIONS`.
    """

    def __init__(
        self,
        in_dim: int,
        num_classes: int,
        hidden: Sequence[int] = (512,),
        dropout: float = 0.0,
        batchnorm: bool = True,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        layers = hidden_layers(in_dim, hidden, dropout, batchnorm, activation)
        width = int(hidden[-1]) if len(hidden) else in_dim
        layers.append(nn.Linear(width, num_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, embeddings: Tensor) -> Tensor:
        return self.layers(embeddings)


class Classifier(nn.Module):
    """Embeddings ``(N, D)`` -> logits ``(N, C)``, with the rule that makes them probabilities.

    Args:
        kind: A name of :data:`CLASSIFIER_HEADS`.
        in_dim: Embedding width ``D``.
        num_classes: ``C``.
        activation: "softmax" (one class per image) or "sigmoid" (multi-label, BCE-trained).
        options: The head's own options (``scale``, ``hidden`` ...), JSON-able.
        classes: The class names, in logit order (``C`` of them), when known.
    """

    def __init__(
        self,
        kind: str,
        in_dim: int,
        num_classes: int,
        activation: str = "softmax",
        options: dict[str, Any] | None = None,
        classes: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        if activation not in ACTIVATION_KINDS:
            raise ValueError(
                f"unknown classifier activation {activation!r}; valid: {', '.join(ACTIVATION_KINDS)}"
            )
        if classes is not None and len(classes) != num_classes:
            raise ValueError(f"{len(classes)} class names for a {num_classes}-class classifier")
        self.kind = kind.lower()
        self.in_dim = int(in_dim)
        self.num_classes = int(num_classes)
        self.activation = activation
        self.options = json.loads(json.dumps(dict(options or {})))
        self.classes = None if classes is None else [str(name) for name in classes]
        self.head = CLASSIFIER_HEADS.create(self.kind, self.in_dim, self.num_classes, **self.options)

    def forward(self, embeddings: Tensor) -> Tensor:
        """``(N, D)`` -> ``(N, C)`` logits."""
        return self.head(embeddings)

    def probabilities(self, embeddings: Tensor) -> Tensor:
        """``(N, D)`` -> ``(N, C)`` probabilities: sigmoid or softmax of the logits (float32)."""
        logits = self(embeddings).float()
        return torch.sigmoid(logits) if self.activation == "sigmoid" else logits.softmax(dim=1)

    def description(self) -> dict[str, Any]:
        """The JSON-able arguments that rebuild this classifier (without weights)."""
        return {
            "kind": self.kind,
            "in_dim": self.in_dim,
            "num_classes": self.num_classes,
            "activation": self.activation,
            "options": self.options,
            "classes": self.classes,
        }

    @classmethod
    def from_description(cls, description: dict[str, Any]) -> Classifier:
        """A classifier with random weights built from :meth:`description`'s output."""
        try:
            return cls(
                description["kind"],
                description["in_dim"],
                description["num_classes"],
                description.get("activation", "softmax"),
                description.get("options"),
                description.get("classes"),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a classifier description: {exc}") from exc


def save_classifier(
    classifier: Classifier, folder: str | os.PathLike[str], fingerprint: str | None
) -> Path:
    """Write ``folder`` (swapped in whole): weights, ``classifier.json`` and the manifest.

    Args:
        classifier: The trained classifier.
        folder: Its folder, by convention ``<model folder>/classifier``.
        fingerprint: The fingerprint of the embedder whose embeddings it classifies.
    """
    from safetensors.torch import save_model

    folder = Path(folder)
    with atomic_folder(folder) as built:
        save_model(classifier, str(built / CLASSIFIER_WEIGHTS))
        info = {"format": "lookalike-classifier", **classifier.description(),
                "fingerprint": fingerprint}
        (built / CLASSIFIER_CONFIG).write_text(json.dumps(info, indent=2), encoding="utf-8")
        write_manifest(built, CLASSIFIER_KIND, fingerprint)
    return folder


def load_classifier(
    folder: str | os.PathLike[str], fingerprint: str | None = None
) -> Classifier:
    """The classifier saved in ``folder``, in eval mode.

    Args:
        folder: A :func:`save_classifier` folder.
        fingerprint: The embedder fingerprint the caller's embeddings come from; when given it
            must equal the one the classifier was trained with.

    Raises:
        FileNotFoundError: No such folder.
        ValueError: A damaged folder, or a classifier of another model.
    """
    from safetensors.torch import load_model

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"classifier folder {folder} does not exist")
    manifest = verify_folder(folder, CLASSIFIER_KIND)
    info = json.loads((folder / CLASSIFIER_CONFIG).read_text(encoding="utf-8"))
    if fingerprint is not None and manifest.fingerprint not in (None, fingerprint):
        raise ValueError(
            f"the classifier in {folder} belongs to model {manifest.fingerprint}, not to "
            f"{fingerprint}; use the model folder it was saved with"
        )
    classifier = Classifier.from_description(info)
    load_model(classifier, str(folder / CLASSIFIER_WEIGHTS), strict=True)
    return classifier.eval()


def model_classifier_folder(model_folder: str | os.PathLike[str]) -> Path:
    """Where a saved model keeps its classifier: ``<model_folder>/classifier``."""
    return Path(model_folder) / CLASSIFIER_DIR


def load_model_classifier(
    model_folder: str | os.PathLike[str], fingerprint: str | None = None
) -> Classifier:
    """The classifier kept with the saved model in ``model_folder``.

    Raises:
        FileNotFoundError: The model was saved without a classifier (trained by a loss with no
            class head, such as multi-similarity or SimSiam).
    """
    folder = model_classifier_folder(model_folder)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"the model in {model_folder} has no classifier: train it with a loss that has a "
            "class head (cross_entropy, bce, arcface, or a hybrid with one)"
        )
    return load_classifier(folder, fingerprint)
