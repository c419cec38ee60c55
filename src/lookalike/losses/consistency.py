"""Consistency regularisation: a model should answer alike on two augmentations of one image.

Each entry compares the weak view's output (the target, gradient stopped by default, as in
FixMatch, Sohn et al. 2020, and UDA, Xie et al. 2020) with the strong view's, over the
:class:`~lookalike.losses.base.ViewPairs` of labelled and unlabelled images alike:

- ``"consistency_mse"``: ``1/(N C) sum_{n,c} (p_s[n,c] - p_w[n,c])^2`` on class probabilities
  (the Pi-model's squared difference, Laine & Aila 2017);
- ``"consistency_kl"``: ``1/N sum_n KL(p_w[n] || p_s[n])``, per row a softmax KL
  ``sum_c p_w log(p_w / p_s)``, or for a multi-label (sigmoid) head the sum over classes of the
  Bernoulli KLs ``p_w log(p_w / p_s) + (1 - p_w) log((1 - p_w) / (1 - p_s))`` (UDA);
- ``"consistency_cosine"``: ``1/N sum_n (1 - cos(e_w[n], e_s[n]))`` on the embeddings themselves.

Probabilities come from a classifier part of the same "hybrid" (named by ``classifier``), with its
own rule: sigmoid for "bce", softmax otherwise. Each term may ramp up as ``exp(-5 (1 - t)^2)``,
``t = min(step / rampup_steps, 1)`` (Laine & Aila 2017), so that it does not pull the model
towards its own early, random answers; the ramp factor is logged as ``<name>_rampup``. The
competition line weighs MSE by 100-300 in the hybrid::

    {"name": "hybrid", "parts": [
        {"name": "arcface", "margin": 8.6, "scale": 30.0},
        {"name": "bce"},
        {"name": "consistency_mse", "classifier": "bce", "weight": 100, "rampup_steps": 500}]}
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

from lookalike.losses.base import RetrievalLoss, ViewPairs, register_loss
from lookalike.losses.classification import ClassLoss


def rampup_factor(step: int, rampup_steps: int) -> float:
    """``exp(-5 (1 - t)^2)`` with ``t = min(step / rampup_steps, 1)``; 1.0 without a ramp-up."""
    if rampup_steps <= 0:
        return 1.0
    progress = min(max(step, 0) / rampup_steps, 1.0)
    return math.exp(-5.0 * (1.0 - progress) ** 2)


class ConsistencyLoss(RetrievalLoss):
    """Base of the consistency entries: ramp-up, stop-gradient and the returned parts.

    Subclasses implement :meth:`divergence` on the float32 weak and strong embeddings.

    Args:
        rampup_steps: Steps of the sigmoid-shaped ramp-up; 0 for none.
        detach_target: Stop the gradient through the weak view's output (it is the target):
            neither the weak embeddings nor a classifier's weights get one through it.
    """

    needs_view_pairs = True

    def __init__(self, rampup_steps: int = 0, detach_target: bool = True) -> None:
        super().__init__()
        if rampup_steps < 0:
            raise ValueError(f"loss {self.name!r}: rampup_steps must be >= 0, got {rampup_steps}")
        self.rampup_steps = int(rampup_steps)
        self.detach_target = detach_target

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
        """The divergence of the view pairs, ramped up by ``step``.

        Returns:
            ``{"loss": ramp * value, <name>: value, <name>_rampup: ramp}``.
        """
        self.validate(
            has_labels=labels is not None,
            has_text=text_embeddings is not None,
            has_views=positive_embeddings is not None,
            has_view_pairs=view_pairs is not None,
        )
        assert view_pairs is not None  # checked by validate
        weak, strong = view_pairs.weak.float(), view_pairs.strong.float()
        if self.detach_target:
            weak = weak.detach()
        with torch.autocast(weak.device.type, enabled=False):
            value = self.divergence(weak, strong)
        ramp = rampup_factor(step, self.rampup_steps)
        return {
            "loss": ramp * value,
            self.name: value,
            f"{self.name}_rampup": torch.tensor(ramp, device=value.device),
        }

    def divergence(self, weak: Tensor, strong: Tensor) -> Tensor:
        """The scalar divergence of ``(N, D)`` weak and strong embeddings."""
        raise NotImplementedError(f"{type(self).__name__} must implement divergence")


class ProbabilityConsistency(ConsistencyLoss):
    """Consistency of the class probabilities of a sibling classifier part.

    Args:
        siblings: The hybrid's parts built before this one (passed by :class:`HybridLoss`).
        classifier: Key of the classifier part; ``None``: the only earlier part with class weights.
        rampup_steps: See :class:`ConsistencyLoss`.
        detach_target: See :class:`ConsistencyLoss`.
    """

    def __init__(
        self,
        *,
        siblings: Mapping[str, RetrievalLoss],
        classifier: str | None = None,
        rampup_steps: int = 0,
        detach_target: bool = True,
    ) -> None:
        super().__init__(rampup_steps, detach_target)
        part = _classifier_part(self.name, siblings, classifier)
        # A bound method, not the module: the part's weights belong to the part, once.
        self.class_logits: Callable[[Tensor], Tensor] = part.class_logits
        self.multilabel = part.classifier_activation == "sigmoid"

    def target_logits(self, weak: Tensor) -> Tensor:
        """The classifier's logits of the weak views: the target, a constant unless
        ``detach_target`` is off. Detaching the weak embeddings alone would still let the
        gradient reach the classifier's weights through the target (FixMatch and UDA stop it
        on the whole target distribution)."""
        logits = self.class_logits(weak)
        return logits.detach() if self.detach_target else logits


def _classifier_part(
    name: str, siblings: Mapping[str, RetrievalLoss], classifier: str | None
) -> ClassLoss:
    candidates = {key: part for key, part in siblings.items() if isinstance(part, ClassLoss)}
    if classifier is None:
        if len(candidates) != 1:
            found = ", ".join(candidates) or "none"
            raise ValueError(
                f"loss {name!r} reads class probabilities: put it in a 'hybrid' after one "
                f"classifier part (cross_entropy, bce, arcface) or name one with 'classifier' "
                f"(earlier classifier parts: {found})"
            )
        return next(iter(candidates.values()))
    if classifier not in candidates:
        raise ValueError(
            f"loss {name!r}: classifier {classifier!r} is not an earlier part with class "
            f"weights; those are: {', '.join(candidates) or '(none)'}"
        )
    return candidates[classifier]


@register_loss("consistency_mse")
class MSEConsistencyLoss(ProbabilityConsistency):
    """Mean squared difference of weak and strong class probabilities (see the module)."""

    def divergence(self, weak: Tensor, strong: Tensor) -> Tensor:
        activate = torch.sigmoid if self.multilabel else (lambda logits: logits.softmax(dim=1))
        return F.mse_loss(activate(self.class_logits(strong)), activate(self.target_logits(weak)))


@register_loss("consistency_kl")
class KLConsistencyLoss(ProbabilityConsistency):
    """``KL(p_weak || p_strong)`` per image, softmax or Bernoulli per class (see the module)."""

    def divergence(self, weak: Tensor, strong: Tensor) -> Tensor:
        target_logits, logits = self.target_logits(weak), self.class_logits(strong)
        if self.multilabel:
            target = torch.sigmoid(target_logits)
            log_p, log_not_p = F.logsigmoid(target_logits), F.logsigmoid(-target_logits)
            log_q, log_not_q = F.logsigmoid(logits), F.logsigmoid(-logits)
            per_class = target * (log_p - log_q) + (1 - target) * (log_not_p - log_not_q)
            return per_class.sum(dim=1).mean()
        log_target = target_logits.log_softmax(dim=1)
        return F.kl_div(logits.log_softmax(dim=1), log_target, reduction="batchmean",
                        log_target=True)


@register_loss("consistency_cosine")
class CosineConsistencyLoss(ConsistencyLoss):
    """``1 - cos(e_weak, e_strong)`` averaged over images; needs no classifier.

    Args:
        rampup_steps: See :class:`ConsistencyLoss`.
        detach_target: See :class:`ConsistencyLoss`.
    """

    def divergence(self, weak: Tensor, strong: Tensor) -> Tensor:
        return (1.0 - F.cosine_similarity(weak, strong, dim=1)).mean()
