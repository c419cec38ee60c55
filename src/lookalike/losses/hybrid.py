"""A weighted sum of registered losses, each part logged under its own key::

    {"name": "hybrid", "parts": [{"name": "cross_entropy", "weight": 1.0},
                                 {"name": "contrastive", "weight": 0.5, "distance": "cosine"}]}

returns ``{"loss": 1.0 * ce + 0.5 * contrastive, "cross_entropy": ce, "contrastive": contrastive}``
(the parts unweighted). Two parts of one kind need distinct ``key`` s:
``{"name": "triplet", "key": "triplet_hard", "miner": "hard"}``. A part's diagnostics (keys
``<name>_<what>``, e.g. a ramp-up factor or SimSiam's output std) are passed on as
``<key>_<what>`` and are not added to the total.

Parts are built in order and a part may read an earlier one: a consistency part on class
probabilities uses the classifier part named by its ``classifier`` option (the competition line:
``[{name: arcface}, {name: bce}, {name: consistency_mse, classifier: bce, weight: 100}]``). The
hybrid's own ``classifier`` option names the part whose class weights are exported with the model
and answer queries (default: the first part that has class weights).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from lookalike.losses.base import RetrievalLoss, ViewPairs, create_loss, register_loss
from lookalike.losses.classification import ClassLoss


@register_loss("hybrid")
class HybridLoss(RetrievalLoss):
    """``sum_i weight_i * part_i``; a batch must carry what any part needs.

    Args:
        parts: Loss specs (as for :func:`create_loss`), each with an optional ``weight`` (>= 0,
            default 1.0) and ``key`` (the log name, default the loss name).
        embedding_dim: Embedding width ``D``, passed to the parts.
        num_classes: Class count ``C`` or ``None``, passed to the parts.
        classifier: Key of the part whose class weights answer queries (and are exported with
            the model); ``None``: the first part that has class weights, if any.

    Attributes:
        parts: ``nn.ModuleDict`` of the part losses by key (their parameters are this module's).
        weights: Weight of each part by key.
    """

    def __init__(
        self,
        parts: Sequence[Mapping[str, Any] | str],
        *,
        embedding_dim: int,
        num_classes: int | None,
        classifier: str | None = None,
    ) -> None:
        super().__init__()
        if isinstance(parts, (str, Mapping)) or not isinstance(parts, Sequence) or not parts:
            raise ValueError(f"loss 'hybrid' needs a non-empty list of parts, got {parts!r}")
        self.parts = nn.ModuleDict()
        self.weights: dict[str, float] = {}
        for spec in parts:
            options = {"name": spec} if isinstance(spec, str) else dict(spec)
            weight = float(options.pop("weight", 1.0))
            key = str(options.pop("key", options.get("name", "")))
            if options.get("name") == "hybrid":
                raise ValueError(
                    "a 'hybrid' part cannot itself be 'hybrid'; list its parts instead"
                )
            if not math.isfinite(weight) or weight < 0:
                raise ValueError(
                    f"hybrid part {key!r}: weight must be a finite number >= 0, got {weight}"
                )
            if key in self.parts or key == "loss" or not key.isidentifier():
                raise ValueError(
                    f"hybrid part key {key!r} is taken, reserved or not an identifier; "
                    "give the part a distinct 'key'"
                )
            self.parts[key] = create_loss(
                options, embedding_dim=embedding_dim, num_classes=num_classes,
                siblings=dict(self.parts),
            )
            self.weights[key] = weight
        members = list(self.parts.values())
        self.needs_labels = any(part.needs_labels for part in members)
        self.needs_pairs = any(part.needs_pairs for part in members)
        self.needs_labels_or_views = any(part.needs_labels_or_views for part in members)
        self.needs_view_pairs = any(part.needs_view_pairs for part in members)
        self.classifier_key = self._classifier_key(classifier)

    def _classifier_key(self, classifier: str | None) -> str | None:
        with_weights = [key for key, part in self.parts.items() if isinstance(part, ClassLoss)]
        if classifier is None:
            return with_weights[0] if with_weights else None
        if classifier not in with_weights:
            raise ValueError(
                f"hybrid classifier {classifier!r} is not a part with class weights; "
                f"those are: {', '.join(with_weights) or '(none)'}"
            )
        return classifier

    def answering_classifier(self) -> ClassLoss | None:
        """The part named by ``classifier`` (or the first with class weights), else ``None``."""
        if self.classifier_key is None:
            return None
        part = self.parts[self.classifier_key]
        assert isinstance(part, ClassLoss)  # checked in __init__
        return part

    def validate(
        self, *, has_labels: bool, has_text: bool, has_views: bool, has_view_pairs: bool = False
    ) -> None:
        """Every part's :meth:`RetrievalLoss.validate`; the first failure is raised."""
        for part in self.parts.values():
            part.validate(
                has_labels=has_labels, has_text=has_text, has_views=has_views,
                has_view_pairs=has_view_pairs,
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
        """Each part on the batch (see :meth:`RetrievalLoss.forward`).

        Returns:
            ``{"loss": weighted sum, <key>: unweighted part value, <key>_<what>: diagnostic}``;
            a part that scales its own value (a ramp-up) enters the sum scaled.
        """
        self.validate(
            has_labels=labels is not None,
            has_text=text_embeddings is not None,
            has_views=positive_embeddings is not None,
            has_view_pairs=view_pairs is not None,
        )
        result: dict[str, Tensor] = {}
        terms = []
        for key, part in self.parts.items():
            parts = part(
                embeddings,
                labels,
                text_embeddings=text_embeddings,
                positive_embeddings=positive_embeddings,
                view_pairs=view_pairs,
                step=step,
            )
            terms.append(self.weights[key] * parts["loss"])
            result[key] = parts.get(part.name, parts["loss"])
            prefix = f"{part.name}_"
            result.update(
                {f"{key}_{name.removeprefix(prefix)}": value
                 for name, value in parts.items() if name.startswith(prefix)}
            )
        return {"loss": torch.stack(terms).sum(), **result}
