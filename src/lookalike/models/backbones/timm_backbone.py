"""timm backbones: ``"timm:NAME"`` for any model of ``timm.list_models()``.

The trunk is ``timm.create_model(NAME, num_classes=0, global_pool="")`` and its features are
``forward_features``: a feature map for CNNs (channels first, NHWC models are permuted) and
tokens for vision transformers (CLS first, register/distillation tokens dropped). Preprocessing
comes from the model's ``pretrained_cfg`` via ``timm.data.resolve_data_config``.
"""

from __future__ import annotations

import difflib
import logging
from typing import Any

import torch
from torch import nn

from lookalike.models.backbones.base import (
    BACKBONES,
    Backbone,
    WeightsSpec,
    first_module_list,
    interpolation_name,
    load_weights_file,
    probe_output_shape,
    resolve_weights,
)
from lookalike.models.preprocessing import Preprocessing

logger = logging.getLogger(__name__)


@BACKBONES.register("timm")
class TimmBackbone(Backbone):
    """A timm model's ``forward_features``.

    Args:
        model_name: A timm model name, optionally with a pretrained tag (``"resnet50.a1_in1k"``).
        weights: ``"pretrained"``, ``None`` or a local state-dict file of the full timm model
            (its classifier keys are ignored).
        **model_kwargs: Passed to ``timm.create_model`` (``img_size=...``, ``drop_path_rate=...``).
    """

    def __init__(self, model_name: str, weights: WeightsSpec = "pretrained", **model_kwargs: Any):
        import timm
        from timm.data import resolve_data_config

        super().__init__()
        resolved = resolve_weights(weights)
        if not timm.is_model(model_name):
            close = difflib.get_close_matches(model_name, timm.list_models(), n=10, cutoff=0.5)
            raise ValueError(
                f"unknown timm model {model_name!r}; close names: {', '.join(close) or 'none'} "
                "(all names: timm.list_models())"
            )
        img_size = model_kwargs.get("img_size")
        if isinstance(img_size, tuple | list) and len(set(img_size)) > 1:
            raise ValueError(
                f"timm:{model_name}: img_size={tuple(img_size)} is not square, and lookalike's "
                f"eval transform makes square inputs; pass one side, e.g. img_size={max(img_size)}"
            )
        self.name = f"timm:{model_name}"
        self.config_kwargs = dict(model_kwargs)
        self.model = timm.create_model(
            model_name,
            pretrained=resolved == "pretrained",
            num_classes=0,
            global_pool="",
            **model_kwargs,
        )
        if resolved not in (None, "pretrained"):
            classifier = self.model.pretrained_cfg.get("classifier") or ()
            prefixes = (classifier,) if isinstance(classifier, str) else tuple(classifier)
            load_weights_file(
                self.model, resolved, discard_prefixes=tuple(f"{name}." for name in prefixes)
            )

        data_config = resolve_data_config(model=self.model)
        input_size = model_kwargs.get("img_size", data_config["input_size"][-1])
        if isinstance(input_size, tuple | list):
            input_size = max(input_size)
        crop_mode = data_config.get("crop_mode", "center")
        if crop_mode not in ("center", "squash"):
            logger.warning("timm crop_mode %r is approximated by a centre crop", crop_mode)
            crop_mode = "center"
        self.preprocessing = Preprocessing(
            input_size=int(input_size),
            mean=tuple(data_config["mean"]),
            std=tuple(data_config["std"]),
            interpolation=interpolation_name(data_config["interpolation"]),
            crop_pct=float(data_config["crop_pct"]),
            crop_mode=crop_mode,
        )

        raw_shape = probe_output_shape(
            self.model, self.model.forward_features, self.preprocessing.input_size
        )
        self._channels_last = getattr(self.model, "output_fmt", "NCHW") == "NHWC"
        self._num_prefix_tokens = int(getattr(self.model, "num_prefix_tokens", 0))
        kinds = {4: "map", 3: "tokens", 2: "pooled"}
        if len(raw_shape) not in kinds:
            raise ValueError(f"timm model {model_name!r} gives features of shape {raw_shape}")
        self.output_kind = kinds[len(raw_shape)]  # type: ignore[assignment]
        self.has_cls_token = (
            self.output_kind == "tokens" and getattr(self.model, "cls_token", None) is not None
        )
        self.feature_dim = self._probe_feature_dim()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` -> ``(B, C, h, w)`` maps or ``(B, 1 + N, C)`` tokens (CLS first)."""
        features = self.model.forward_features(images)
        if self.output_kind == "map" and self._channels_last:
            return features.permute(0, 3, 1, 2)
        if self.output_kind == "tokens" and self._num_prefix_tokens:
            patches = features[:, self._num_prefix_tokens :]
            return torch.cat([features[:, :1], patches], dim=1) if self.has_cls_token else patches
        return features

    def set_grad_checkpointing(self, enabled: bool = True) -> None:
        """timm's own ``set_grad_checkpointing`` (non-reentrant ``torch.utils.checkpoint`` over
        the model's blocks, unless ``TIMM_REENTRANT_CKPT`` says otherwise).

        Raises:
            ValueError: The timm model does not support it.
        """
        try:
            self.model.set_grad_checkpointing(enabled)
        except (AssertionError, NotImplementedError, AttributeError) as error:
            raise ValueError(
                f"timm model {self.name} does not support gradient checkpointing ({error}); "
                "set trainer.grad_checkpointing=false"
            ) from None

    def blocks(self) -> list[tuple[str, nn.Module]]:
        found = first_module_list(self.model, ("blocks", "stages", "layers"))
        if not found:
            found = [
                (name, getattr(self.model, name))
                for name in ("layer1", "layer2", "layer3", "layer4")
                if hasattr(self.model, name)
            ]
        if not found:
            found = list(self.model.named_children())
        return [(f"model.{name}", module) for name, module in found]
