"""Typed settings shared by the jobs: which model, how to embed, which index.

Each is a dataclass so that it is the typed default of a YAML config (see :mod:`lookalike.config`)
and can be overridden from the command line with dotted keys (``model.pool=gem``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lookalike.models import Embedder, create_embedder, load_embedder


@dataclass
class ModelSpec:
    """The embedder: a registered backbone with pooling and head, or a saved model folder.

    Attributes:
        backbone: Registered backbone name, e.g. ``"efficientnet_lite:lite0"``, ``"timm:resnet50"``.
        pool: Pooling name ("auto", "gap", "gem", "max", "cls").
        head: Head spec ("none", "linear:512", "mlp:512").
        weights: "pretrained", "none", or a local weights file.
        checkpoint: A saved embedder (folder or training checkpoint); overrides the fields above.
        backbone_kwargs: Options of the backbone adapter (``img_size`` for timm ViTs ...).
        pool_kwargs: Options of the pooling (``{"p": 3.0}`` for GeM).
        head_kwargs: Options of the head (``{"dropout": 0.1}``).
    """

    backbone: str = "efficientnet_lite:lite0"
    pool: str = "auto"
    head: str = "none"
    weights: str = "pretrained"
    checkpoint: str | None = None
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)
    pool_kwargs: dict[str, Any] = field(default_factory=dict)
    head_kwargs: dict[str, Any] = field(default_factory=dict)


def build_embedder(spec: ModelSpec) -> Embedder:
    """The embedder ``spec`` names: the saved one at ``checkpoint`` (a ``save_embedder`` folder or
    a training ``.ckpt``), else a new one from the registries."""
    if spec.checkpoint:
        return load_embedder(spec.checkpoint)
    return create_embedder(
        spec.backbone,
        pool=spec.pool,
        head=spec.head,
        weights=spec.weights,
        pool_kwargs=dict(spec.pool_kwargs),
        head_kwargs=dict(spec.head_kwargs),
        **dict(spec.backbone_kwargs),
    )


@dataclass
class EmbedSpec:
    """How images are embedded.

    Attributes:
        batch_size: Images per forward pass.
        num_workers: DataLoader worker processes decoding images.
        device: "auto" (CUDA when present), "cpu" or "cuda[:N]".
        tta: Test-time augmentations averaged into each embedding ("flip", "scale:0.8").
        shard_size: Images per resumable shard.
    """

    batch_size: int = 64
    num_workers: int = 2
    device: str = "auto"
    tta: list[str] = field(default_factory=list)
    shard_size: int = 10_000


@dataclass
class IndexSpec:
    """The nearest-neighbour index searched.

    Attributes:
        kind: Registered index name ("flat", "ivf_flat", "ivf_pq", "hnsw", "exact_torch").
        metric: "cosine", "ip", "l2" or "l1".
        device: "cpu" or "cuda" (FAISS GPU where installed).
        params: Index parameters (``nlist``, ``m``, ``M``, ``nprobe``, ``ef_search`` ...).
    """

    kind: str = "flat"
    metric: str = "cosine"
    device: str = "cpu"
    params: dict[str, Any] = field(default_factory=dict)
