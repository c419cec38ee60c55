"""Losses that own one weight vector per class: margin softmax, proxies and classifier heads.

All need class labels and ``num_classes``; each owns parameters the optimiser must train. With
``positive_embeddings`` the second view is classified too (its rows share the first view's labels);
``text_embeddings`` are not used.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
import torch.nn.functional as F
from pytorch_metric_learning import losses as pml_losses
from torch import Tensor, nn

from lookalike.losses.base import (
    RetrievalLoss,
    register_loss,
    require_1d_labels,
    require_positive,
    stack_views,
)
from lookalike.models.classifier import Classifier
from lookalike.models.heads import hidden_layers


class ClassifierHead(nn.Module):
    """Linear classifier on embeddings, a cosine one (Wang et al. 2017, NormFace), or an MLP.

    Args:
        embedding_dim: Input width ``D``.
        num_classes: Output width ``C``.
        normalized: Logits are ``scale * cos(x, w_c)`` (no bias) instead of ``x W^T + b``.
        scale: Logit scale of the cosine classifier (> 0).
        hidden: Widths of hidden layers before the last linear layer (an MLP classifier, each
            ``Linear -> [BatchNorm] -> activation -> Dropout``); empty for none.
        dropout: Dropout after each hidden activation.
        batchnorm: ``BatchNorm1d`` after each hidden ``Linear``.
        activation: Hidden activation, a name of :data:`~lookalike.models.heads.ACTIVATIONS`.

    Attributes:
        hidden: The hidden layers (an empty ``nn.Sequential`` without them).
        linear: The last layer, ``(C, width)`` weight.
    """

    def __init__(
        self,
        embedding_dim: int,
        num_classes: int,
        normalized: bool = False,
        scale: float = 16.0,
        hidden: Sequence[int] = (),
        dropout: float = 0.0,
        batchnorm: bool = True,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        if normalized and hidden:
            raise ValueError("a classifier head is either normalized (cosine) or an MLP, not both")
        self.mlp_options = {
            "hidden": [int(width) for width in hidden],
            "dropout": float(dropout),
            "batchnorm": bool(batchnorm),
            "activation": activation,
        }
        # The same layers, in the same order, as models.classifier.MLPClassifier.
        self.hidden = nn.Sequential(
            *hidden_layers(embedding_dim, self.mlp_options["hidden"], dropout, batchnorm, activation)
        )
        width = int(hidden[-1]) if hidden else embedding_dim
        self.linear = nn.Linear(width, num_classes, bias=not normalized)
        self.normalized = normalized
        self.scale = scale
        self.embedding_dim = embedding_dim
        self.num_classes = num_classes

    def forward(self, embeddings: Tensor) -> Tensor:
        """``(N, D)`` embeddings → ``(N, C)`` logits."""
        if self.normalized:
            centres = F.normalize(self.linear.weight, dim=1)
            return self.scale * F.normalize(embeddings, dim=1) @ centres.T
        return self.linear(self.hidden(embeddings))

    def export(self, activation: str, classes: Sequence[str] | None) -> Classifier:
        """A standalone :class:`~lookalike.models.classifier.Classifier` with these weights."""
        if self.normalized:
            classifier = Classifier("cosine", self.embedding_dim, self.num_classes, activation,
                                    {"scale": self.scale}, classes)
            state = {"head.weight": self.linear.weight}
        elif self.mlp_options["hidden"]:
            classifier = Classifier("mlp", self.embedding_dim, self.num_classes, activation,
                                    self.mlp_options, classes)
            last = len(self.hidden)
            state = {f"head.layers.{key}": value for key, value in self.hidden.state_dict().items()}
            state.update({f"head.layers.{last}.{key}": value
                          for key, value in self.linear.state_dict().items()})
        else:
            classifier = Classifier("linear", self.embedding_dim, self.num_classes, activation,
                                    None, classes)
            state = {f"head.linear.{key}": value for key, value in self.linear.state_dict().items()}
        classifier.load_state_dict({key: value.detach().clone() for key, value in state.items()})
        return classifier.eval()


class ClassLoss(RetrievalLoss):
    """Base for losses with ``num_classes`` outputs: checks the count and the labels' range.

    Subclasses set ``criterion`` (a pml loss taking ``(rows, labels)``) or override
    :meth:`compute_loss`.
    """

    criterion: nn.Module

    needs_labels = True
    classifier_activation: ClassVar[str] = "softmax"
    """How :meth:`class_probabilities` turns logits into probabilities ("softmax", "sigmoid")."""

    def __init__(self, num_classes: int | None) -> None:
        super().__init__()
        if num_classes is None or num_classes < 1:
            raise ValueError(
                f"loss {self.name!r} needs num_classes >= 1 (the data's label count), "
                f"got {num_classes}"
            )
        self.num_classes = num_classes

    def check_labels(self, labels: Tensor) -> Tensor:
        """``(B,)`` integer labels in ``[0, C)`` as int64; a one-line ``ValueError`` otherwise."""
        require_1d_labels(self.name, labels)
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= self.num_classes):
            raise ValueError(
                f"loss {self.name!r}: labels must lie in [0, {self.num_classes}), "
                f"got {int(labels.min())}..{int(labels.max())}"
            )
        return labels.long()

    def answering_classifier(self) -> ClassLoss:
        """This loss: its class weights answer queries."""
        return self

    def class_logits(self, embeddings: Tensor) -> Tensor:
        """``(N, D)`` embeddings -> ``(N, C)`` logits of this loss's class weights."""
        raise NotImplementedError(f"{type(self).__name__} must implement class_logits")

    def class_probabilities(self, embeddings: Tensor) -> Tensor:
        """``(N, D)`` -> ``(N, C)`` probabilities (:attr:`classifier_activation` of the logits)."""
        logits = self.class_logits(embeddings.float())
        if self.classifier_activation == "sigmoid":
            return torch.sigmoid(logits)
        return logits.softmax(dim=1)

    def export_classifier(self, classes: Sequence[str] | None) -> Classifier:
        """A standalone :class:`~lookalike.models.classifier.Classifier` with these class weights,
        to keep with the exported model.

        Args:
            classes: The ``C`` class names in label-code order, or ``None``.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement export_classifier")

    def class_rows(
        self, embeddings: Tensor, labels: Tensor, positive_embeddings: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        """``(N, D)`` rows and ``(N,)`` labels, the second view appended when present."""
        return stack_views(embeddings, self.check_labels(labels), positive_embeddings)

    def compute_loss(
        self,
        embeddings: Tensor,
        labels: Tensor | None,
        *,
        text_embeddings: Tensor | None,
        positive_embeddings: Tensor | None,
    ) -> Tensor:
        assert labels is not None  # checked by RetrievalLoss.validate
        rows, row_labels = self.class_rows(embeddings, labels, positive_embeddings)
        return self.criterion(rows, row_labels)


@register_loss("arcface")
class ArcFaceLoss(ClassLoss):
    """Additive angular margin loss (Deng et al. 2019, ArcFace), pml's ``ArcFaceLoss``.

    Logits are ``s * cos(theta_j)`` against L2-normalised class centres, with the target's
    replaced by ``s * cos(theta_y + m)`` (by ``s * (cos(theta_y) - m sin(m))`` once
    ``theta_y > pi - m``, keeping it monotonic); then cross-entropy. Use it as the only loss, or
    as an auxiliary part of "hybrid".

    Args:
        embedding_dim: Embedding width ``D``.
        num_classes: Class count ``C``.
        margin: Angular margin ``m`` **in degrees**, as pml takes it (28.6 degrees = 0.5 rad, the
            paper's value).
        scale: Logit scale ``s`` (> 0).

    Attributes:
        criterion: The pml loss; its ``W`` parameter, ``(D, C)``, holds the class centres.
    """

    def __init__(
        self,
        *,
        embedding_dim: int,
        num_classes: int | None,
        margin: float = 28.6,
        scale: float = 64.0,
    ) -> None:
        super().__init__(num_classes)
        require_positive(self.name, "scale", scale)
        self.criterion = pml_losses.ArcFaceLoss(
            num_classes=self.num_classes, embedding_size=embedding_dim, margin=margin, scale=scale
        )
        self.scale = scale

    def class_logits(self, embeddings: Tensor) -> Tensor:
        """``s * cos(x, w_c)``: the class centres without the training margin."""
        centres = F.normalize(self.criterion.W.T, dim=1)
        return self.scale * F.normalize(embeddings, dim=1) @ centres.T

    def export_classifier(self, classes: Sequence[str] | None) -> Classifier:
        """The class centres as a ``"cosine"`` classifier of scale ``s``."""
        width, count = self.criterion.W.shape
        classifier = Classifier("cosine", width, count, self.classifier_activation,
                                {"scale": self.scale}, classes)
        classifier.load_state_dict({"head.weight": self.criterion.W.detach().T.clone()})
        return classifier.eval()


@register_loss("proxy_anchor")
class ProxyAnchorLoss(ClassLoss):
    """Proxy-Anchor loss (Kim et al. 2020, eq. 4), pml's ``ProxyAnchorLoss`` with cosine similarity.

    ``1/|P+| sum_{p in P+} log(1 + sum_{x in X_p+} exp(-alpha (s(x, p) - delta)))
    + 1/|P| sum_{p in P} log(1 + sum_{x in X_p-} exp(alpha (s(x, p) + delta)))``, where ``P+`` are
    the proxies with a positive in the batch. The paper trains the proxies with a learning rate
    100x the backbone's: give ``criterion.proxies`` its own optimiser group.

    Args:
        embedding_dim: Embedding width ``D``.
        num_classes: Class count ``C`` (one proxy each).
        margin: ``delta``.
        alpha: Scale ``alpha`` (> 0).

    Attributes:
        criterion: The pml loss; its ``proxies`` parameter is ``(C, D)``.
    """

    def __init__(
        self,
        *,
        embedding_dim: int,
        num_classes: int | None,
        margin: float = 0.1,
        alpha: float = 32.0,
    ) -> None:
        super().__init__(num_classes)
        require_positive(self.name, "alpha", alpha)
        self.criterion = pml_losses.ProxyAnchorLoss(
            num_classes=self.num_classes, embedding_size=embedding_dim, margin=margin, alpha=alpha
        )
        self.alpha = alpha

    def class_logits(self, embeddings: Tensor) -> Tensor:
        """``alpha * cos(x, p_c)`` against the proxies."""
        proxies = F.normalize(self.criterion.proxies, dim=1)
        return self.alpha * F.normalize(embeddings, dim=1) @ proxies.T

    def export_classifier(self, classes: Sequence[str] | None) -> Classifier:
        """The proxies as a ``"cosine"`` classifier of scale ``alpha``."""
        count, width = self.criterion.proxies.shape
        classifier = Classifier("cosine", width, count, self.classifier_activation,
                                {"scale": self.alpha}, classes)
        classifier.load_state_dict({"head.weight": self.criterion.proxies.detach().clone()})
        return classifier.eval()


@register_loss("cross_entropy")
class CrossEntropyLoss(ClassLoss):
    """Softmax cross-entropy of a classifier head on the embedding, with optional label smoothing.

    A classifier trained this way is a strong metric-learning baseline, best with a normalised
    (cosine) head (Zhai & Wu 2019, "Classification is a Strong Baseline for Deep Metric Learning").

    Args:
        embedding_dim: Embedding width ``D``.
        num_classes: Class count ``C``.
        label_smoothing: Mass in ``[0, 1)`` spread uniformly over classes (Szegedy et al. 2016).
        normalized: Cosine classifier ``scale * cos(x, w_c)`` instead of a linear layer.
        scale: Logit scale of the cosine classifier (> 0).
        hidden: Hidden widths of an MLP classifier (see :class:`ClassifierHead`); empty: linear.
        dropout: Dropout after each hidden activation of the MLP.
        batchnorm: BatchNorm after each hidden layer of the MLP.
        activation: Hidden activation of the MLP.

    Attributes:
        head: The :class:`ClassifierHead`.
    """

    def __init__(
        self,
        *,
        embedding_dim: int,
        num_classes: int | None,
        label_smoothing: float = 0.0,
        normalized: bool = False,
        scale: float = 16.0,
        hidden: Sequence[int] = (),
        dropout: float = 0.0,
        batchnorm: bool = True,
        activation: str = "relu",
    ) -> None:
        super().__init__(num_classes)
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(
                f"loss {self.name!r}: label_smoothing must lie in [0, 1), got {label_smoothing}"
            )
        require_positive(self.name, "scale", scale)
        self.label_smoothing = label_smoothing
        self.head = ClassifierHead(
            embedding_dim, self.num_classes, normalized, scale, hidden, dropout, batchnorm, activation
        )

    def class_logits(self, embeddings: Tensor) -> Tensor:
        return self.head(embeddings)

    def export_classifier(self, classes: Sequence[str] | None) -> Classifier:
        return self.head.export(self.classifier_activation, classes)

    def compute_loss(
        self,
        embeddings: Tensor,
        labels: Tensor | None,
        *,
        text_embeddings: Tensor | None,
        positive_embeddings: Tensor | None,
    ) -> Tensor:
        assert labels is not None  # checked by RetrievalLoss.validate
        rows, row_labels = self.class_rows(embeddings, labels, positive_embeddings)
        return F.cross_entropy(self.head(rows), row_labels, label_smoothing=self.label_smoothing)


@register_loss("bce")
class BCELoss(ClassLoss):
    """Multi-label binary cross-entropy of a classifier head, averaged over samples and classes.

    Labels are ``(B, C)`` multi-hot, or ``(B,)`` integer classes (one-hot encoded here). Its
    probabilities are the sigmoid of each logit (multi-label), not a softmax.

    Args:
        embedding_dim: Embedding width ``D``.
        num_classes: Class count ``C``.
        normalized: Cosine classifier ``scale * cos(x, w_c)`` instead of a linear layer.
        scale: Logit scale of the cosine classifier (> 0).
        hidden: Hidden widths of an MLP classifier (see :class:`ClassifierHead`); empty: linear.
        dropout: Dropout after each hidden activation of the MLP.
        batchnorm: BatchNorm after each hidden layer of the MLP.
        activation: Hidden activation of the MLP.

    Attributes:
        head: The :class:`ClassifierHead`.
    """

    classifier_activation = "sigmoid"

    def __init__(
        self,
        *,
        embedding_dim: int,
        num_classes: int | None,
        normalized: bool = False,
        scale: float = 16.0,
        hidden: Sequence[int] = (),
        dropout: float = 0.0,
        batchnorm: bool = True,
        activation: str = "relu",
    ) -> None:
        super().__init__(num_classes)
        require_positive(self.name, "scale", scale)
        self.head = ClassifierHead(
            embedding_dim, self.num_classes, normalized, scale, hidden, dropout, batchnorm, activation
        )

    def class_logits(self, embeddings: Tensor) -> Tensor:
        return self.head(embeddings)

    def export_classifier(self, classes: Sequence[str] | None) -> Classifier:
        return self.head.export(self.classifier_activation, classes)

    def compute_loss(
        self,
        embeddings: Tensor,
        labels: Tensor | None,
        *,
        text_embeddings: Tensor | None,
        positive_embeddings: Tensor | None,
    ) -> Tensor:
        assert labels is not None  # checked by RetrievalLoss.validate
        targets = self.multi_hot(labels)
        rows = embeddings
        if positive_embeddings is not None:
            rows = torch.cat([embeddings, positive_embeddings])
            targets = torch.cat([targets, targets])
        return F.binary_cross_entropy_with_logits(self.head(rows), targets)

    def multi_hot(self, labels: Tensor) -> Tensor:
        """``(B,)`` classes or ``(B, C)`` multi-hot → ``(B, C)`` float targets."""
        if labels.ndim == 1:
            return F.one_hot(self.check_labels(labels), self.num_classes).float()
        if labels.shape[1] != self.num_classes:
            raise ValueError(
                f"loss {self.name!r}: multi-hot labels must be (B, {self.num_classes}), "
                f"got {tuple(labels.shape)}"
            )
        return labels.float()
