"""Hugging Face transformers backbones: ``"hf:REPO_ID"`` (``"hf:facebook/dinov2-base"``).

Any vision model ``AutoModel`` builds (ViT, DINOv2 with or without registers, DeiT, BEiT,
Swin V2, ConvNeXt, ResNet ...) plus the image tower of CLIP checkpoints. Features are
``last_hidden_state``: tokens for transformers (CLS first when the model has one, register and
distillation tokens dropped; Swin's tokens have no CLS), a feature map for CNNs. For CLIP the
tokens are post-layer-normed and projected, so ``tokens[:, 0]`` is CLIP's image embedding.

The model's config is stored in :attr:`HFBackbone.config_kwargs`, so a saved embedder rebuilds
without the Hub; preprocessing is read from the repository's image-processor config, with
ImageNet defaults at the config's image size when there is none.
"""

from __future__ import annotations

import copy
import json
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
from lookalike.models.preprocessing import IMAGENET_MEAN, IMAGENET_STD, Preprocessing

logger = logging.getLogger(__name__)

_CLIP_TYPES = ("clip", "clip_vision_model")
_OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
_OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


@BACKBONES.register("hf")
class HFBackbone(Backbone):
    """A transformers vision model's ``last_hidden_state``.

    Args:
        model_name: A Hub repository id (``"facebook/dinov2-base"``).
        weights: ``"pretrained"`` (``from_pretrained``), ``None``, or a local state-dict file of
            the model (keys with or without the task model's trunk prefix).
        config: The architecture, as a ``PretrainedConfig`` or its ``to_dict()``; read from the
            Hub when omitted. Lets tests and saved embedders build the model offline.
        **model_kwargs: Passed to ``from_pretrained`` / ``from_config``.
    """

    def __init__(
        self,
        model_name: str,
        weights: WeightsSpec = "pretrained",
        config: Any = None,
        **model_kwargs: Any,
    ):
        from transformers import AutoConfig, PretrainedConfig

        super().__init__()
        resolved = resolve_weights(weights)
        self.name = f"hf:{model_name}"
        if isinstance(config, dict):
            if "model_type" not in config:
                raise ValueError(f"hf:{model_name}: a config dict needs a 'model_type' key")
            config_object = AutoConfig.for_model(**config)
        elif isinstance(config, PretrainedConfig) or config is None:
            config_object = config or AutoConfig.from_pretrained(model_name)
        else:
            raise ValueError(f"hf:{model_name}: config must be a PretrainedConfig or a dict")
        if config_object.model_type == "clip":
            config_object = config_object.vision_config
        self._is_clip = config_object.model_type in _CLIP_TYPES
        # ViTMAEModel drops a random 75 % of the patches in every forward, eval included (its
        # pre-training masking): embed every patch, in order
        self._is_mae = config_object.model_type == "vit_mae"
        if self._is_mae and config_object.mask_ratio:
            config_object = copy.deepcopy(config_object)
            config_object.mask_ratio = 0.0

        self.model = self._build(model_name, config_object, resolved, model_kwargs)
        if resolved not in (None, "pretrained"):
            load_weights_file(self.model, resolved, strip_prefix=f"{self.model.base_model_prefix}.")
        stored = (
            config if isinstance(config, dict) else json.loads(self.model.config.to_json_string())
        )
        self.config_kwargs = {"config": stored, **model_kwargs}
        self.preprocessing = _preprocessing(model_name, self.model.config, from_hub=config is None)

        embeddings = getattr(self.model, "embeddings", None)
        self.has_cls_token = self._is_clip or getattr(embeddings, "cls_token", None) is not None
        self._num_prefix_tokens = (
            int(self.has_cls_token)
            + int(getattr(self.model.config, "num_register_tokens", 0) or 0)
            + int(getattr(embeddings, "distillation_token", None) is not None)
        )
        shape = probe_output_shape(self.model, self._raw, self.preprocessing.input_size)
        kinds = {4: "map", 3: "tokens", 2: "pooled"}
        self.output_kind = kinds[len(shape)]  # type: ignore[assignment]
        self.has_cls_token = self.has_cls_token and self.output_kind == "tokens"
        self.feature_dim = self._probe_feature_dim()

    @staticmethod
    def _build(
        model_name: str, config: Any, weights: Any, model_kwargs: dict[str, Any]
    ) -> nn.Module:
        from transformers import AutoModel, CLIPVisionModelWithProjection

        is_clip = config.model_type in _CLIP_TYPES
        if weights == "pretrained":
            if is_clip:
                return CLIPVisionModelWithProjection.from_pretrained(model_name, **model_kwargs)
            return AutoModel.from_pretrained(model_name, config=config, **model_kwargs)
        if is_clip:
            return CLIPVisionModelWithProjection._from_config(config, **model_kwargs)
        return AutoModel.from_config(config, **model_kwargs)

    def _raw(self, images: torch.Tensor) -> torch.Tensor:
        if self._is_mae:
            patch = self.model.config.patch_size
            count = (images.shape[-2] // patch) * (images.shape[-1] // patch)
            in_order = torch.arange(count, device=images.device, dtype=torch.float32)
            output = self.model(pixel_values=images, noise=in_order.expand(images.shape[0], -1))
        else:
            output = self.model(pixel_values=images)
        if self._is_clip:
            tokens = self.model.vision_model.post_layernorm(output.last_hidden_state)
            return self.model.visual_projection(tokens)
        hidden = getattr(output, "last_hidden_state", None)
        return hidden if hidden is not None else output.pooler_output

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` -> tokens ``(B, 1 + N, C)`` (CLS first), a map, or ``(B, C)``."""
        features = self._raw(images)
        if self.output_kind == "tokens" and self._num_prefix_tokens:
            patches = features[:, self._num_prefix_tokens :]
            return torch.cat([features[:, :1], patches], dim=1) if self.has_cls_token else patches
        return features

    def set_grad_checkpointing(self, enabled: bool = True) -> None:
        """transformers' activation checkpointing, non-reentrant (it runs only while the model
        is in training mode, as transformers does).

        Raises:
            ValueError: The architecture does not support it.
        """
        if not getattr(self.model, "supports_gradient_checkpointing", False):
            raise ValueError(
                f"{self.name} ({type(self.model).__name__}) does not support gradient "
                "checkpointing; set trainer.grad_checkpointing=false"
            )
        # transformers 5 renamed gradient_checkpointing_* to activation_checkpointing_*
        if enabled:
            enable = getattr(self.model, "activation_checkpointing_enable", None)
            if enable is not None:
                enable(activation_checkpointing_kwargs={"use_reentrant": False})
            else:
                self.model.gradient_checkpointing_enable(
                    gradient_checkpointing_kwargs={"use_reentrant": False}
                )
        else:
            disable = getattr(self.model, "activation_checkpointing_disable", None)
            (disable or self.model.gradient_checkpointing_disable)()

    def blocks(self) -> list[tuple[str, nn.Module]]:
        found = first_module_list(self.model, ("layer", "layers", "stages", "blocks"))
        return [(f"model.{name}", module) for name, module in found]


def _preprocessing(model_name: str, config: Any, from_hub: bool) -> Preprocessing:
    """The repository's image-processor settings, or defaults at the config's image size."""
    processor: dict[str, Any] = {}
    if from_hub:
        from transformers.image_processing_base import ImageProcessingMixin

        try:
            processor, _ = ImageProcessingMixin.get_image_processor_dict(model_name)
        except (OSError, ValueError) as exc:
            logger.warning("no image processor config for %s (%s); using defaults", model_name, exc)
        processor = _as_its_class_reads_it(model_name, processor)
    image_size = getattr(config, "image_size", 224)
    image_size = max(image_size) if isinstance(image_size, tuple | list) else int(image_size)
    is_clip = config.model_type in _CLIP_TYPES
    mean = tuple(processor.get("image_mean") or (_OPENAI_MEAN if is_clip else IMAGENET_MEAN))
    std = tuple(processor.get("image_std") or (_OPENAI_STD if is_clip else IMAGENET_STD))
    interpolation = interpolation_name(processor.get("resample", 3))
    if not processor:
        return Preprocessing(
            input_size=image_size,
            mean=mean,  # type: ignore[arg-type]
            std=std,  # type: ignore[arg-type]
            interpolation=interpolation,
            crop_pct=1.0 if is_clip else 0.875,
            crop_mode="center",
        )
    if not processor.get("do_normalize", True):
        mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    for key in ("do_flip_channel_order", "rescale_offset", "include_top"):
        if processor.get(key):
            logger.warning("%s: image processor option %s is not reproduced here", model_name, key)
    size = processor.get("size", image_size)
    shortest = size.get("shortest_edge") if isinstance(size, dict) else int(size)
    resize_side = shortest or (size.get("height") if isinstance(size, dict) else image_size)
    if not resize_side:
        raise ValueError(
            f"hf:{model_name}: image processor size {size} has neither 'shortest_edge' nor "
            "'height'; pass config= and set the embedder's preprocessing yourself"
        )
    resize_side = int(resize_side)
    mode = "center" if shortest else "squash"
    kind = str(processor.get("image_processor_type", ""))
    crop_pct = processor.get("crop_pct")
    crop = processor.get("crop_size") if processor.get("do_center_crop") else None
    crop_side = int(crop["height"] if isinstance(crop, dict) else crop) if crop else resize_side
    if kind.startswith("ConvNext") and shortest:
        # ConvNextImageProcessor (also ResNet, RegNet, ConvNeXt V2): below 384 px the short side
        # goes to int(S / crop_pct) and the centre S is cropped; from 384 px on it warps to S x S
        crop_side = resize_side
        if resize_side < 384:
            resize_side = int(resize_side / float(crop_pct or 224 / 256))
        else:
            mode = "squash"
    elif kind.startswith("Levit") and shortest:
        resize_side = int((256 / 224) * resize_side)  # LevitImageProcessor's own rule
    elif crop_pct is not None and crop:
        resize_side = int(resize_side / float(crop_pct))  # PoolFormerImageProcessor
    return Preprocessing(
        input_size=crop_side,
        mean=mean,  # type: ignore[arg-type]
        std=std,  # type: ignore[arg-type]
        interpolation=interpolation,
        crop_pct=_crop_pct(crop_side, resize_side),
        crop_mode=mode,
    )


def _as_its_class_reads_it(model_name: str, processor: dict[str, Any]) -> dict[str, Any]:
    """The processor settings after its own class has read them: an integer ``size`` becomes the
    class's square or short-side dict (``ViTImageProcessor``: 224 -> 224 x 224), absent keys take
    the class's defaults (``resample``). Unchanged when the class is not named or not known."""
    import transformers

    name = processor.get("image_processor_type") or str(
        processor.get("feature_extractor_type", "")
    ).replace("FeatureExtractor", "ImageProcessor")
    processor_class = getattr(transformers, name, None) if name else None
    if processor_class is None:
        return processor
    settings = {
        key: value
        for key, value in processor.items()
        if key not in ("image_processor_type", "feature_extractor_type", "processor_class")
    }
    try:
        return dict(processor_class(**settings).to_dict())
    except (TypeError, ValueError) as exc:
        logger.warning("%s: %s cannot read its settings (%s)", model_name, name, exc)
        return processor


def _crop_pct(crop_side: int, resize_side: int) -> float:
    """The ``crop_pct`` whose ``floor(crop_side / crop_pct)`` is exactly ``resize_side``."""
    crop_pct = crop_side / resize_side
    if int(crop_side / crop_pct) != resize_side:
        crop_pct = crop_side / (resize_side + 0.5)
    return crop_pct
