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
from lookalike.models.onnx.folder import is_onnx_folder
from lookalike.models.onnx.runtime import OnnxEmbedder, load_onnx_embedder

RUNTIMES = ("auto", "torch", "onnxruntime")


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
        normalize: L2-normalise the embeddings. True suits cosine / inner-product search; False
            keeps the raw norms, so inner product and L2 rank differently from cosine (choose
            with ``metric=auto``). Saved with the model and part of its fingerprint. A
            checkpoint keeps its own setting unless this is False, which switches it off.
        runtime: What runs the model: "torch", "onnxruntime" (needs an ONNX export folder, made
            by ``lookalike export``, as ``checkpoint``), or "auto" (ONNX Runtime for an export
            folder, PyTorch otherwise).
    """

    backbone: str = "efficientnet_lite:lite0"
    pool: str = "auto"
    head: str = "none"
    weights: str = "pretrained"
    checkpoint: str | None = None
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)
    pool_kwargs: dict[str, Any] = field(default_factory=dict)
    head_kwargs: dict[str, Any] = field(default_factory=dict)
    normalize: bool = True
    runtime: str = "auto"


def build_embedder(spec: ModelSpec) -> Embedder | OnnxEmbedder:
    """The embedder ``spec`` names: the saved one at ``checkpoint`` (a ``save_embedder`` folder or
    a training ``.ckpt``), else a new one from the registries.

    ``spec.normalize=False`` also switches a saved model's normalisation off (its fingerprint
    then changes with it); True keeps the saved model's own setting.

    An ONNX export folder (``lookalike export``) as ``checkpoint`` is run by ONNX Runtime.

    Raises:
        ValueError: An unknown ``runtime``, ``"onnxruntime"`` without an ONNX export folder,
            ``"torch"`` with one, or ``normalize=False`` with one.
    """
    if spec.runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {spec.runtime!r}; valid: {', '.join(RUNTIMES)}")
    onnx = bool(spec.checkpoint) and is_onnx_folder(str(spec.checkpoint))
    if spec.runtime == "onnxruntime" and not onnx:
        raise ValueError(
            f"runtime onnxruntime runs an ONNX export folder and {spec.checkpoint or spec.backbone}"
            " is none; make one with `lookalike export MODEL --format onnx -o DIR` and give DIR "
            "as the checkpoint"
        )
    if spec.runtime == "torch" and onnx:
        raise ValueError(
            f"{spec.checkpoint} is an ONNX export, which ONNX Runtime runs; use runtime "
            "onnxruntime (or auto), or the PyTorch model folder it was exported from"
        )
    if onnx:
        if not spec.normalize:
            raise ValueError(
                f"{spec.checkpoint} is an ONNX export, whose normalisation is fixed; export "
                "a model built with normalize=False instead"
            )
        return load_onnx_embedder(str(spec.checkpoint))
    if spec.checkpoint:
        embedder = load_embedder(spec.checkpoint)
        return embedder if spec.normalize else embedder.with_normalize(False)
    return create_embedder(
        spec.backbone,
        pool=spec.pool,
        head=spec.head,
        normalize=spec.normalize,
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
    normalize: bool = True,
    runtime: str = "auto",
) -> ModelSpec:
    """The :class:`ModelSpec` of options a user gave, None meaning "not given" (the default).

    ``normalize=False`` is allowed beside a checkpoint (it switches the saved model's
    normalisation off).

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
    return ModelSpec(**given, checkpoint=checkpoint, normalize=normalize, runtime=runtime)
