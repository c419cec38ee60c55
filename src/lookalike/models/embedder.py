"""The embedder: backbone -> pooling -> head -> L2 normalisation, one ``(B, D)`` row per image.

:func:`create_embedder` builds one from names; its :attr:`Embedder.config` is a plain dict that
rebuilds the same architecture, and :meth:`Embedder.fingerprint` identifies the exact model
(architecture, weights and preprocessing) so embeddings from different models never mix.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.transforms import v2

from lookalike.models.backbones import Backbone, WeightsSpec, create_backbone
from lookalike.models.heads import create_head
from lookalike.models.pooling import POOLINGS, resolve_pooling
from lookalike.models.preprocessing import Preprocessing, eval_transform

logger = logging.getLogger(__name__)


class Embedder(nn.Module):
    """Images ``(B, 3, H, W)`` -> embeddings ``(B, D)``, L2-normalised unless told otherwise.

    Args:
        backbone: Feature extractor (see :class:`~lookalike.models.backbones.Backbone`).
        pooling: Features -> descriptor ``(B, C)``.
        head: Descriptor ``(B, C)`` -> embedding ``(B, D)``; needs an ``out_dim`` attribute.
        normalize: L2-normalise the embeddings (for cosine / inner-product search).
        config: The :func:`create_embedder` arguments that rebuild this architecture.
        preprocessing: Evaluation preprocessing; the backbone's when omitted.
    """

    def __init__(
        self,
        backbone: Backbone,
        pooling: nn.Module,
        head: nn.Module,
        normalize: bool = True,
        config: dict[str, Any] | None = None,
        preprocessing: Preprocessing | None = None,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.pooling = pooling
        self.head = head
        self.normalize = normalize
        self.preprocessing = preprocessing or backbone.preprocessing
        self._config = dict(config or {})

    @property
    def embedding_dim(self) -> int:
        """Width ``D`` of the embeddings."""
        return int(self.head.out_dim)

    @property
    def config(self) -> dict[str, Any]:
        """Plain, JSON-able arguments of :func:`create_embedder` (no weights path)."""
        return json.loads(json.dumps(self._config))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` normalised images -> ``(B, D)`` embeddings."""
        embeddings = self.head(self.pooling(self.backbone(images)))
        return F.normalize(embeddings, dim=-1) if self.normalize else embeddings

    def with_normalize(self, normalize: bool) -> Embedder:
        """This embedder with L2 normalisation switched on or off (in place; returned).

        The setting is part of :attr:`config`, so it is saved with the model and changes the
        :meth:`fingerprint`: embeddings with and without normalisation never mix.
        """
        self.normalize = bool(normalize)
        self._config["normalize"] = self.normalize
        return self

    def eval_transform(self) -> v2.Compose:
        """PIL RGB image -> ``(3, S, S)`` input tensor, as the weights expect."""
        return eval_transform(self.preprocessing)

    def fingerprint(self) -> str:
        """16 hex characters of SHA-256 over the config, the preprocessing and every tensor of
        the state dict (names, dtypes, shapes and bytes): equal models give equal fingerprints,
        and any changed weight changes it."""
        digest = hashlib.sha256()
        header = {"config": self._config, "preprocessing": self.preprocessing.to_dict()}
        digest.update(json.dumps(header, sort_keys=True).encode("utf-8"))
        for name, tensor in sorted(self.state_dict().items()):
            flat = tensor.detach().to("cpu").contiguous().reshape(-1)
            digest.update(f"{name}|{flat.dtype}|{tuple(tensor.shape)}".encode())
            digest.update(flat.view(torch.uint8).numpy().tobytes())
        return digest.hexdigest()[:16]


def create_embedder(
    backbone: str,
    pool: str = "auto",
    head: str = "none",
    normalize: bool = True,
    weights: WeightsSpec = "pretrained",
    pool_kwargs: dict[str, Any] | None = None,
    head_kwargs: dict[str, Any] | None = None,
    **backbone_kwargs: Any,
) -> Embedder:
    """Build an embedder from names.

    Args:
        backbone: ``"prefix:model"``, e.g. ``"efficientnet_lite:lite0"``, ``"timm:resnet50"``,
            ``"open_clip:ViT-B-32/openai"``, ``"hf:facebook/dinov2-base"``,
            ``"torchvision:resnet50"``.
        pool: A name of :data:`~lookalike.models.pooling.POOLINGS` or ``"auto"`` (CLS token for
            token models that have one, identity for pooled features, average otherwise).
        head: Head spec (``"none"``, ``"linear:256"``, ``"mlp:1024:256"``).
        normalize: L2-normalise the embeddings.
        weights: ``"pretrained"``, ``None`` (random initialisation) or a state-dict file of the
            backbone's library model.
        pool_kwargs: Options of the pooling (``{"p": 3.0}`` for GeM).
        head_kwargs: Options of the head (``{"dropout": 0.1}``).
        **backbone_kwargs: Options of the backbone adapter (``img_size=...`` for timm).

    Returns:
        The embedder; ``create_embedder(**embedder.config, weights=None)`` rebuilds its
        architecture.
    """
    trunk = create_backbone(backbone, weights=weights, **backbone_kwargs)
    pool_name = resolve_pooling(pool, trunk.output_kind, trunk.has_cls_token)
    try:
        pooling = POOLINGS.create(
            pool_name, has_cls_token=trunk.has_cls_token, **(pool_kwargs or {})
        )
    except TypeError as exc:
        raise ValueError(f"pool {pool_name!r} with options {pool_kwargs}: {exc}") from exc
    projection = create_head(head, trunk.feature_dim, **(head_kwargs or {}))
    config = {
        "backbone": backbone,
        "pool": pool_name,
        "head": head,
        "normalize": normalize,
        "pool_kwargs": dict(pool_kwargs or {}),
        "head_kwargs": dict(head_kwargs or {}),
        **trunk.config_kwargs,
    }
    try:
        json.dumps(config)
    except TypeError as exc:
        raise ValueError(f"embedder options must be JSON-serialisable to be saved: {exc}") from exc
    embedder = Embedder(trunk, pooling, projection, normalize=normalize, config=config)
    logger.info(
        "embedder %s pool=%s head=%s: %d-d embeddings",
        backbone,
        pool_name,
        head,
        embedder.embedding_dim,
    )
    return embedder
