"""SimSiam (Chen & He, "Exploring Simple Siamese Representation Learning", CVPR 2021).

Two views ``x1, x2`` of each image go through the embedder ``f`` and a projector ``g`` (both
views, shared weights) to ``z1, z2``, then a predictor ``h`` to ``p1, p2``. With ``D(p, z) =
-cos(p, z)`` and ``sg`` the stop-gradient (the paper's Algorithm 1)::

    L = D(p1, sg(z2)) / 2 + D(p2, sg(z1)) / 2

No negatives and no momentum encoder: the stop-gradient alone prevents collapse. Collapse shows as
the per-dimension standard deviation of the L2-normalised ``z`` falling to 0; healthy training
keeps it near ``1 / sqrt(d)`` (the paper's Fig. 2), so it is returned as ``simsiam_output_std``
(logged every step and as an epoch mean) beside ``simsiam_output_std_ratio`` = std * sqrt(d).

The projector and predictor are the loss's own parameters, as ArcFace's centres are: they train
with ``optim.loss_lr`` and are dropped at export, so the trained embedder exports, embeds and
searches like any other model. Paper defaults (ImageNet, ResNet-50): projector of 3 layers of width
2048, predictor bottleneck 512; the distractor-competition work used projector 256 on a 1024-d
embedding.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lookalike.losses.base import RetrievalLoss, ViewPairs, check_batch, register_loss


def projector(in_dim: int, width: int, out_dim: int, layers: int = 3) -> nn.Sequential:
    """SimSiam's projection MLP ``g``: ``layers - 1`` blocks ``Linear -> BN -> ReLU``, then
    ``Linear -> BN`` (no ReLU) to ``out_dim``."""
    if layers < 1:
        raise ValueError(f"the SimSiam projector needs >= 1 layer, got {layers}")
    modules: list[nn.Module] = []
    width_in = in_dim
    for _ in range(layers - 1):
        modules += [nn.Linear(width_in, width, bias=False), nn.BatchNorm1d(width), nn.ReLU()]
        width_in = width
    modules += [nn.Linear(width_in, out_dim, bias=False), nn.BatchNorm1d(out_dim, affine=False)]
    return nn.Sequential(*modules)


def predictor(dim: int, bottleneck: int) -> nn.Sequential:
    """SimSiam's prediction MLP ``h``: ``Linear -> BN -> ReLU -> Linear``, ``dim -> bottleneck ->
    dim``."""
    return nn.Sequential(
        nn.Linear(dim, bottleneck, bias=False),
        nn.BatchNorm1d(bottleneck),
        nn.ReLU(),
        nn.Linear(bottleneck, dim),
    )


def negative_cosine(prediction: Tensor, target: Tensor) -> Tensor:
    """``D(p, z) = -mean_n cos(p_n, sg(z_n))``: the gradient never reaches ``target``."""
    return -F.cosine_similarity(prediction, target.detach(), dim=1).mean()


def output_std(projections: Tensor) -> Tensor:
    """Mean over dimensions of the batch std of the L2-normalised ``(N, d)`` projections."""
    return F.normalize(projections.detach(), dim=1).std(dim=0).mean()


@register_loss("simsiam")
class SimSiamLoss(RetrievalLoss):
    """The symmetric SimSiam loss on two views, with its projector and predictor.

    Args:
        embedding_dim: Embedding width ``D`` (the projector's input).
        projection_dim: Output width ``d`` of the projector.
        hidden_dim: Width of the projector's hidden layers; ``projection_dim`` when ``None``.
        projector_layers: Layers of the projector (3 in the paper).
        predictor_dim: Bottleneck width of the predictor (``d / 4`` in the paper).

    Attributes:
        projector: ``g``, ``(N, D) -> (N, d)``.
        predictor: ``h``, ``(N, d) -> (N, d)``.
    """

    needs_pairs = True
    pairs = "views"  # the second view of each image, never a caption

    def __init__(
        self,
        *,
        embedding_dim: int,
        projection_dim: int = 2048,
        hidden_dim: int | None = None,
        projector_layers: int = 3,
        predictor_dim: int = 512,
    ) -> None:
        super().__init__()
        if min(projection_dim, predictor_dim, hidden_dim or projection_dim) < 1:
            raise ValueError("loss 'simsiam': widths must be >= 1")
        self.projection_dim = projection_dim
        self.projector = projector(
            embedding_dim, hidden_dim or projection_dim, projection_dim, projector_layers
        )
        self.predictor = predictor(projection_dim, predictor_dim)

    def validate(
        self, *, has_labels: bool, has_text: bool, has_views: bool, has_view_pairs: bool = False
    ) -> None:
        """As :meth:`RetrievalLoss.validate`; captions alone do not do: SimSiam needs two views."""
        if not has_views:
            raise ValueError(
                f"loss {self.name!r} needs two views of each image: set data.two_views=true"
            )
        super().validate(
            has_labels=has_labels,
            has_text=has_text,
            has_views=has_views,
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
        """The loss on ``embeddings`` (view 1) and ``positive_embeddings`` (view 2); labels unused.

        Returns:
            ``{"loss", "simsiam", "simsiam_output_std", "simsiam_output_std_ratio"}``.
        """
        self.validate(
            has_labels=labels is not None,
            has_text=text_embeddings is not None,
            has_views=positive_embeddings is not None,
        )
        first, _, second = check_batch(
            self.name, embeddings, labels, text_embeddings, positive_embeddings
        )
        assert second is not None  # checked by validate
        with torch.autocast(first.device.type, enabled=False):
            value, std = self.terms(first, second)
        return {
            "loss": value,
            self.name: value,
            f"{self.name}_output_std": std,
            f"{self.name}_output_std_ratio": std * math.sqrt(self.projection_dim),
        }

    def terms(self, first: Tensor, second: Tensor) -> tuple[Tensor, Tensor]:
        """The loss and the collapse monitor (:func:`output_std` of ``z1, z2``) of two views."""
        z1, z2 = self.projector(first), self.projector(second)
        p1, p2 = self.predictor(z1), self.predictor(z2)
        loss = negative_cosine(p1, z2) / 2 + negative_cosine(p2, z1) / 2
        return loss, output_std(torch.cat([z1, z2]))

    def compute_loss(
        self,
        embeddings: Tensor,
        labels: Tensor | None,
        *,
        text_embeddings: Tensor | None,
        positive_embeddings: Tensor | None,
    ) -> Tensor:
        assert positive_embeddings is not None  # checked by RetrievalLoss.validate
        return self.terms(embeddings, positive_embeddings)[0]
