"""The contract every training loss follows, the registry that names losses, and distances.

A loss is an ``nn.Module`` called on one batch::

    loss = create_loss({"name": "triplet", "margin": 0.2, "miner": "semihard"}, embedding_dim=512,
                       num_classes=None)
    parts = loss(embeddings, labels)                          # (B, D), (B,)
    parts = loss(embeddings, positive_embeddings=second_view)  # two views, no labels
    parts["loss"].backward()

It returns named parts, ``{"loss": total, "<name>": value, ...}``, so logs show each term. Losses
that own parameters (ArcFace's class centres, ProxyAnchor's proxies, CLIP's temperature, a
classifier head) expose them through ``.parameters()`` for the optimiser.

Following pytorch-metric-learning, a distance is a constructor argument (``distance="cosine"`` or
``"l2"``), not a new class.

Semi-supervised training adds weak/strong view pairs of labelled *and* unlabelled images
(:class:`ViewPairs`) and the training step (for ramp-ups): ``loss(embeddings, labels,
view_pairs=ViewPairs(weak, strong), step=global_step)``. Losses that do not use them ignore them;
consistency losses (:mod:`lookalike.losses.consistency`) need them.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, TypeVar

import torch
from pytorch_metric_learning.distances import BaseDistance, CosineSimilarity, LpDistance
from torch import Tensor, nn

from lookalike.models.classifier import Classifier
from lookalike.registry import Registry

LOSSES: Registry[RetrievalLoss] = Registry("loss")
DISTANCES: Registry[BaseDistance] = Registry("distance")

L = TypeVar("L", bound="type[RetrievalLoss]")


class AnsweringClassifier(Protocol):
    """A loss part whose class weights answer queries with classes (every
    :class:`~lookalike.losses.classification.ClassLoss`): what
    :meth:`RetrievalLoss.answering_classifier` gives."""

    name: ClassVar[str]
    num_classes: int

    def class_probabilities(self, embeddings: Tensor) -> Tensor:
        """``(N, D)`` embeddings -> ``(N, C)`` class probabilities."""
        ...

    def export_classifier(self, classes: Sequence[str] | None) -> Classifier:
        """A standalone classifier with these class weights, for checkpoints and export."""
        ...


@DISTANCES.register("cosine")
def cosine_distance(normalize_embeddings: bool = True) -> BaseDistance:
    """pml's ``CosineSimilarity`` (higher is closer); embeddings are always L2-normalised."""
    if not normalize_embeddings:
        raise ValueError(
            "distance 'cosine' always L2-normalises; use distance 'l2' for raw embeddings"
        )
    return CosineSimilarity()


@DISTANCES.register("l2")
def l2_distance(normalize_embeddings: bool = True) -> BaseDistance:
    """pml's ``LpDistance(p=2)`` (lower is closer), on L2-normalised rows unless told otherwise."""
    return LpDistance(p=2, normalize_embeddings=normalize_embeddings)


def make_distance(name: str, normalize_embeddings: bool = True) -> BaseDistance:
    """A pml distance by name ("cosine" or "l2"); ``ValueError`` listing the names otherwise."""
    return DISTANCES.create(name, normalize_embeddings=normalize_embeddings)


@dataclass(frozen=True)
class ViewPairs:
    """Two augmented views of the same images, for consistency regularisation.

    Attributes:
        weak: ``(N, D)`` embeddings of weakly augmented views (the target side).
        strong: ``(N, D)`` embeddings of strongly augmented views of the same images, row by row.
    """

    weak: Tensor
    strong: Tensor

    def __post_init__(self) -> None:
        if self.weak.ndim != 2 or self.weak.shape != self.strong.shape:
            raise ValueError(
                f"view pairs must be two (N, D) tensors of one shape, got "
                f"{tuple(self.weak.shape)} and {tuple(self.strong.shape)}"
            )


def register_loss(name: str) -> Callable[[L], L]:
    """Class decorator: sets ``cls.name`` and adds the class to :data:`LOSSES` under ``name``."""

    def decorator(cls: L) -> L:
        cls.name = name
        LOSSES.register(name)(cls)
        return cls

    return decorator


class RetrievalLoss(nn.Module):
    """Base class: validates one batch, computes a scalar, returns named parts.

    Subclasses implement :meth:`compute_loss`; :meth:`forward` checks shapes and what the loss
    needs, then runs it in float32 with autocast off (exponentials at scale 64 overflow float16,
    and pml casts its weights to the embeddings' dtype).

    Attributes:
        name: The registry name, also the key of this loss's value in the returned dict.
        needs_labels: Class labels are required.
        needs_pairs: Paired embeddings are required (``text_embeddings`` or
            ``positive_embeddings``).
        needs_labels_or_views: Either labels or a second view of each image are required (without
            labels, views ``i`` and ``i + B`` are the only positives).
        needs_view_pairs: Weak/strong :class:`ViewPairs` are required (consistency losses).
    """

    name: ClassVar[str] = ""
    needs_labels: bool = False
    needs_pairs: bool = False
    needs_labels_or_views: bool = False
    needs_view_pairs: bool = False

    def answering_classifier(self) -> AnsweringClassifier | None:
        """The part whose class weights give class probabilities, ``None`` for a loss without."""
        return None

    def validate(
        self, *, has_labels: bool, has_text: bool, has_views: bool, has_view_pairs: bool = False
    ) -> None:
        """Raise a one-line ``ValueError`` when a batch with these fields cannot feed this loss.

        The trainer calls this before training, from the dataset's columns.

        Args:
            has_labels: Batches carry class labels.
            has_text: Batches carry caption embeddings (``text_embeddings``).
            has_views: Batches carry a second view of each image (``positive_embeddings``).
            has_view_pairs: Batches carry weak/strong view pairs (``view_pairs``).
        """
        has_pairs = has_text or has_views
        if self.needs_labels and not has_labels:
            raise ValueError(f"loss {self.name!r} needs class labels: give the data a label column")
        if self.needs_pairs and not has_pairs:
            raise ValueError(
                f"loss {self.name!r} needs a caption column or two views of each image"
            )
        if self.needs_labels_or_views and not (has_labels or has_views):
            raise ValueError(f"loss {self.name!r} needs class labels or two views of each image")
        if self.needs_view_pairs and not has_view_pairs:
            raise ValueError(
                f"loss {self.name!r} needs weak/strong view pairs: set data.unlabelled "
                "(a combined labelled + unlabelled loader)"
            )

    def forward(
        self,
        embeddings: Tensor,
        labels: Tensor | None = None,
        *,
        text_embeddings: Tensor | None = None,
        positive_embeddings: Tensor | None = None,
        view_pairs: ViewPairs | None = None,
        step: int = 0,
    ) -> dict[str, Tensor]:
        """Compute the loss on one batch.

        Args:
            embeddings: ``(B, D)`` image embeddings.
            labels: ``(B,)`` integer class labels (``(B, C)`` multi-hot for "bce"), or ``None``.
            text_embeddings: ``(B, D)`` caption embeddings, row ``i`` describing image ``i``.
            positive_embeddings: ``(B, D)`` a second view of each image (same labels).
            view_pairs: Weak/strong views of labelled and unlabelled images (consistency losses).
            step: The optimiser step (consistency ramp-ups).

        Returns:
            ``{"loss": total, <name>: total}``; subclasses with several terms add one key each.
        """
        self.validate(
            has_labels=labels is not None,
            has_text=text_embeddings is not None,
            has_views=positive_embeddings is not None,
            has_view_pairs=view_pairs is not None,
        )
        embeddings, text_embeddings, positive_embeddings = check_batch(
            self.name, embeddings, labels, text_embeddings, positive_embeddings
        )
        with torch.autocast(embeddings.device.type, enabled=False):
            value = self.compute_loss(
                embeddings,
                labels,
                text_embeddings=text_embeddings,
                positive_embeddings=positive_embeddings,
            )
        return {"loss": value, self.name: value}

    def compute_loss(
        self,
        embeddings: Tensor,
        labels: Tensor | None,
        *,
        text_embeddings: Tensor | None,
        positive_embeddings: Tensor | None,
    ) -> Tensor:
        """The scalar loss on float32 inputs already checked by :meth:`forward`."""
        raise NotImplementedError(f"{type(self).__name__} must implement compute_loss")


def check_batch(
    name: str,
    embeddings: Tensor,
    labels: Tensor | None,
    text_embeddings: Tensor | None,
    positive_embeddings: Tensor | None,
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    if embeddings.ndim != 2:
        raise ValueError(
            f"loss {name!r}: embeddings must be (B, D), got shape {tuple(embeddings.shape)}"
        )
    batch = embeddings.shape[0]
    if labels is not None and (labels.ndim not in (1, 2) or labels.shape[0] != batch):
        raise ValueError(
            f"loss {name!r}: labels must be (B,) or (B, C) with B={batch}, "
            f"got shape {tuple(labels.shape)}"
        )
    checked = []
    pairs = (("text_embeddings", text_embeddings), ("positive_embeddings", positive_embeddings))
    for field, other in pairs:
        if other is not None and other.shape != embeddings.shape:
            raise ValueError(
                f"loss {name!r}: {field} must have the embeddings' shape "
                f"{tuple(embeddings.shape)}, "
                f"got {tuple(other.shape)}"
            )
        checked.append(None if other is None else other.float())
    return embeddings.float(), checked[0], checked[1]


def stack_views(
    embeddings: Tensor, labels: Tensor | None, positive_embeddings: Tensor | None
) -> tuple[Tensor, Tensor]:
    """Rows and labels for a label-based loss, with a second view appended when there is one.

    Args:
        embeddings: ``(B, D)``.
        labels: ``(B,)`` class labels, or ``None`` when ``positive_embeddings`` is given.
        positive_embeddings: ``(B, D)`` second view, or ``None``.

    Returns:
        ``(N, D)`` rows and ``(N,)`` labels, ``N = 2B`` with a second view (rows ``i`` and ``i + B``
        share a label: the class label, else the instance index as in SimCLR), ``N = B`` without.
    """
    if positive_embeddings is None:
        if labels is None:
            raise ValueError("labels are required when there is no second view")
        return embeddings, labels
    if labels is None:
        labels = torch.arange(embeddings.shape[0], device=embeddings.device)
    return torch.cat([embeddings, positive_embeddings]), torch.cat([labels, labels])


def require_1d_labels(name: str, labels: Tensor) -> None:
    """One-line ``ValueError`` unless ``labels`` is a ``(B,)`` integer tensor."""
    if labels.ndim != 1 or labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ValueError(
            f"loss {name!r} takes (B,) integer labels, "
            f"got {labels.dtype} of shape {tuple(labels.shape)}"
        )


def require_positive(name: str, option: str, value: float) -> None:
    """One-line ``ValueError`` unless the option ``value`` is > 0."""
    if not value > 0:
        raise ValueError(f"loss {name!r}: {option} must be > 0, got {value}")


def create_loss(
    spec: Mapping[str, Any] | str,
    *,
    embedding_dim: int,
    num_classes: int | None,
    siblings: Mapping[str, RetrievalLoss] | None = None,
) -> RetrievalLoss:
    """Build a loss from its config: ``"supcon"`` or ``{"name": "triplet", "margin": 0.2, ...}``.

    Args:
        spec: A registered name (see ``LOSSES.names()``), or a mapping with ``"name"`` and the
            entry's own options.
        embedding_dim: Embedding width ``D`` (for losses with weights: ArcFace, proxies, heads).
        num_classes: Number of training classes ``C``, or ``None`` when the data has no labels.
        siblings: The parts of a "hybrid" built so far, by key, for entries that read one of
            them (a consistency loss on a classifier's probabilities).

    Raises:
        ValueError: Unknown name (the message lists the valid names) or an option the entry does
            not take (the message lists its options).
    """
    if isinstance(spec, str):
        name, options = spec, {}
    elif isinstance(spec, Mapping) and isinstance(spec.get("name"), str):
        options = {key: value for key, value in spec.items() if key != "name"}
        name = spec["name"]
    else:
        raise ValueError(f"a loss spec is a name or a mapping with a 'name' key, got {spec!r}")
    factory = LOSSES.get(name)
    accepted = inspect.signature(factory).parameters
    context = {"embedding_dim": embedding_dim, "num_classes": num_classes, "siblings": siblings or {}}
    unknown = sorted(set(options) - set(accepted) | set(options) & set(context))
    if unknown:
        valid = ", ".join(sorted(key for key in accepted if key not in context)) or "(none)"
        raise ValueError(f"loss {name!r} does not take {', '.join(unknown)}; its options: {valid}")
    options.update({key: value for key, value in context.items() if key in accepted})
    return factory(**options)
