"""The typed setting that names an embedder, and the function that builds it.

:class:`ModelSpec` is a dataclass so that it is the typed default of a YAML config (see
:mod:`lookalike.config`) and can be overridden from the command line with dotted keys
(``model.pool=gem``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lookalike.models.checkpoint import load_embedder
from lookalike.models.embedder import Embedder, create_embedder


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


def model_spec_from_options(
    checkpoint: str | None = None,
    backbone: str | None = None,
    pool: str | None = None,
    head: str | None = None,
    weights: str | None = None,
) -> ModelSpec:
    """The :class:`ModelSpec` of options a user gave, None meaning "not given" (the default).

    Raises:
        ValueError: ``checkpoint`` together with any other option: a saved model carries its own
            backbone, pooling, head and weights, and the options given would be ignored.
    """
    given = {
        name: value
        for name, value in (("backbone", backbone), ("pool", pool), ("head", head),
                            ("weights", weights))
        if value is not None
    }
    if checkpoint and given:
        named = ", ".join(f"{name}={value}" for name, value in given.items())
        raise ValueError(
            f"the checkpoint {checkpoint} carries its own model; give it or {named}, not both"
        )
    return ModelSpec(**given, checkpoint=checkpoint)
