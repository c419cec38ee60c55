"""The frozen part of an embedder (backbone + pooling) and whether it is random in training mode.

Training on cached features (:mod:`lookalike.train.cached_features`) replaces every epoch's pass
through a frozen backbone by one pass in eval mode. That gives the same training only when the
backbone gives the same features in training mode: :func:`stochastic_backbone` says when it does
not (dropout, drop connect, stochastic depth).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lookalike.models.embedder import Embedder
from lookalike.models.preprocessing import Preprocessing
from lookalike.train.finetune import set_frozen_eval


class PooledFeatures(nn.Module):
    """The frozen part of an embedder: images ``(B, 3, S, S)`` -> pooled descriptors ``(B, C)``.

    Shares the backbone and pooling modules of ``embedder`` (no copy); has what
    :func:`~lookalike.embed.extract.embed_image_set` needs of an embedder.
    """

    normalize = False

    def __init__(self, embedder: Embedder) -> None:
        super().__init__()
        self.backbone = embedder.backbone
        self.pooling = embedder.pooling
        self.embedding_dim = int(embedder.backbone.feature_dim)
        self.preprocessing: Preprocessing = embedder.preprocessing
        self.config = {**embedder.config, "part": "backbone+pooling"}
        self._fingerprint = f"{embedder.fingerprint()}:pooled"

    def fingerprint(self) -> str:
        return self._fingerprint

    def forward(self, images: Tensor) -> Tensor:
        return self.pooling(self.backbone(images))


def stochastic_backbone(embedder: Embedder) -> str | None:
    """Why the frozen backbone + pooling gives other outputs in training mode (as the image path
    runs it: ``train()`` then frozen BatchNorm in eval) than in eval mode, or ``None`` when it
    gives the same. Dropout and stochastic-depth layers are named; anything else (EfficientNet's
    functional drop connect) is found by running two random images both ways. Global random
    state is left as it was."""
    layers = stochastic_layers(embedder.backbone)
    if layers:
        return f"the backbone drops activations in training mode ({layers[0]})"
    stem = PooledFeatures(embedder)
    size = embedder.preprocessing.input_size
    parameter = next(embedder.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    probe = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0)).to(device)
    was_training = embedder.training
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            embedder.train()
            set_frozen_eval(embedder)
            in_training = stem(probe)
            embedder.eval()
            in_eval = stem(probe)
    finally:
        embedder.train(was_training)
    scale = torch.maximum(in_training.abs().max(), in_eval.abs().max())
    if (in_training - in_eval).abs().max() <= 1e-4 * scale:  # relative: random weights are tiny
        return None
    return "the backbone is random in training mode (dropout, drop connect or stochastic depth)"


def stochastic_layers(backbone: nn.Module) -> list[str]:
    """Names of dropout and stochastic-depth layers that drop something in training mode."""
    found = []
    for name, layer in backbone.named_modules():
        rate = getattr(layer, "p", None) if isinstance(layer, nn.modules.dropout._DropoutNd) else (
            getattr(layer, "drop_prob", None)  # timm's DropPath / DropBlock
        )
        if isinstance(rate, float | int) and not isinstance(rate, bool) and rate > 0:
            found.append(name)
    return found
