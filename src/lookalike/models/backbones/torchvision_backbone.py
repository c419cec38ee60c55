"""torchvision backbones: ``"torchvision:NAME"`` for ResNet/ResNeXt/Wide-ResNet, EfficientNet
(V1 and V2), MobileNet V2/V3, ConvNeXt and GoogLeNet.

Features are the feature map before global pooling and the classifier, which are removed.
Preprocessing comes from the default weights enum's ``transforms()`` (resize, crop, mean, std,
interpolation), whose metadata needs no download.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from lookalike.models.backbones.base import (
    BACKBONES,
    Backbone,
    WeightsSpec,
    interpolation_name,
    load_weights_file,
    resolve_weights,
)
from lookalike.models.preprocessing import Preprocessing

_FEATURES_FAMILIES = ("efficientnet_", "mobilenet_v2", "mobilenet_v3", "convnext_")
_RESNET_FAMILIES = ("resnet", "resnext", "wide_resnet")
_GOOGLENET_TRUNK = (
    "conv1", "maxpool1", "conv2", "conv3", "maxpool2", "inception3a", "inception3b", "maxpool3",
    "inception4a", "inception4b", "inception4c", "inception4d", "inception4e", "maxpool4",
    "inception5a", "inception5b",
)  # fmt: skip


def _family(model_name: str) -> str:
    if model_name == "googlenet":
        return "googlenet"
    if model_name.startswith(_RESNET_FAMILIES):
        return "resnet"
    if model_name.startswith(_FEATURES_FAMILIES):
        return "features"
    return ""


def supported_models() -> list[str]:
    """torchvision classification models this adapter can cut before their classifier."""
    from torchvision.models import list_models

    return [name for name in list_models() if _family(name)]


@BACKBONES.register("torchvision")
class TorchvisionBackbone(Backbone):
    """A torchvision classification model without its pooling and classifier.

    Args:
        model_name: ``"resnet50"``, ``"efficientnet_b3"``, ``"googlenet"`` ...
        weights: ``"pretrained"`` (the DEFAULT weights enum), ``None``, or a local state-dict
            file of the full torchvision model.
        **model_kwargs: Passed to the torchvision builder.
    """

    def __init__(self, model_name: str, weights: WeightsSpec = "pretrained", **model_kwargs: Any):
        from torchvision.models import get_model, get_model_weights

        super().__init__()
        resolved = resolve_weights(weights)
        self._family = _family(model_name)
        if model_name not in supported_models():
            raise ValueError(
                f"unsupported torchvision model {model_name!r}; "
                f"valid: {', '.join(supported_models())}"
            )
        self.name = f"torchvision:{model_name}"
        self.config_kwargs = dict(model_kwargs)
        default_weights = get_model_weights(model_name).DEFAULT
        build_kwargs = dict(model_kwargs)
        discard: tuple[str, ...] = ()
        if self._family == "googlenet":
            # The same structure for every weights choice: no auxiliary heads, and the input
            # re-normalisation the pretrained weights were trained with.
            # torchvision's truncated-normal initialisation is slow and any weights replace it.
            build_kwargs = {
                "aux_logits": False, "transform_input": True, "init_weights": False, **build_kwargs
            }  # fmt: skip
            discard = ("aux1.", "aux2.")
        model = get_model(
            model_name,
            weights=default_weights if resolved == "pretrained" else None,
            **build_kwargs,
        )
        if resolved not in (None, "pretrained"):
            load_weights_file(model, resolved, discard_prefixes=discard)
        if self._family == "features":
            del model.avgpool, model.classifier
        else:
            del model.avgpool, model.fc
            if self._family == "googlenet":
                del model.dropout
        self.model = model

        transform = default_weights.transforms()
        self.preprocessing = Preprocessing(
            input_size=int(transform.crop_size[0]),
            mean=tuple(transform.mean),
            std=tuple(transform.std),
            interpolation=interpolation_name(transform.interpolation),
            crop_pct=min(1.0, transform.crop_size[0] / transform.resize_size[0]),
            crop_mode="center",
        )
        self.output_kind = "map"
        self.has_cls_token = False
        self.feature_dim = self._probe_feature_dim()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` -> ``(B, C, h, w)``."""
        model = self.model
        if self._family == "features":
            return model.features(images)
        if self._family == "googlenet":
            x = model._transform_input(images)
            for name in _GOOGLENET_TRUNK:
                x = getattr(model, name)(x)
            return x
        x = model.maxpool(model.relu(model.bn1(model.conv1(images))))
        return model.layer4(model.layer3(model.layer2(model.layer1(x))))

    def blocks(self) -> list[tuple[str, nn.Module]]:
        if self._family == "features":
            return [(f"model.features.{n}", m) for n, m in self.model.features.named_children()]
        names = _GOOGLENET_TRUNK if self._family == "googlenet" else (
            "conv1", "bn1", "layer1", "layer2", "layer3", "layer4"
        )
        return [(f"model.{name}", getattr(self.model, name)) for name in names]
