"""open_clip backbones: ``"open_clip:ARCH/TAG"`` (``"open_clip:ViT-B-32/openai"``).

The image tower of a CLIP model (Radford et al., "Learning Transferable Visual Models From
Natural Language Supervision", ICML 2021). For the standard vision transformer (CLS pooling, no
attentional pooler) the features are all tokens after ``ln_post`` projected by ``proj``, so
``tokens[:, 0]`` is exactly CLIP's image embedding (the one aligned with the text tower) and the
other tokens are patch embeddings in the same space; other towers give that embedding pooled.
The text tower stays reachable as :attr:`OpenClipBackbone.text_model` (with ``encode_text`` and
``logit_scale``) for contrastive image-text fine-tuning, but ``forward`` never runs it.
"""

from __future__ import annotations

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
    resolve_weights,
)
from lookalike.models.preprocessing import Preprocessing


@BACKBONES.register("open_clip")
class OpenClipBackbone(Backbone):
    """The image tower of an open_clip model.

    Args:
        model_name: ``"ARCH/TAG"`` (``"ViT-B-32/openai"``) or ``"ARCH"`` alone (no pretrained tag).
        weights: ``"pretrained"`` (the tag's weights), ``None``, or a local state-dict file of the
            full CLIP model (image and text towers).
        with_text: Keep the text tower as :attr:`text_model`; ``False`` drops it (smaller
            checkpoints when only the image tower is trained).
        **model_kwargs: Passed to ``open_clip.create_model`` (e.g. ``vision_cfg={...}``).
    """

    def __init__(
        self,
        model_name: str,
        weights: WeightsSpec = "pretrained",
        with_text: bool = True,
        **model_kwargs: Any,
    ):
        import open_clip

        super().__init__()
        resolved = resolve_weights(weights)
        arch, _, tag = model_name.partition("/")
        if arch not in open_clip.list_models():
            raise ValueError(
                f"unknown open_clip architecture {arch!r}; "
                f"valid: {', '.join(open_clip.list_models())}"
            )
        tag_config = open_clip.get_pretrained_cfg(arch, tag) if tag else {}
        if tag and not tag_config:
            tags = [t for a, t in open_clip.list_pretrained() if a == arch]
            raise ValueError(f"unknown open_clip tag {tag!r} for {arch}; valid: {', '.join(tags)}")
        if resolved == "pretrained" and not tag:
            raise ValueError(
                f"open_clip:{model_name} names no pretrained tag; write 'open_clip:{arch}/TAG' "
                "or pass weights=None"
            )
        self.name = f"open_clip:{model_name}"
        self.config_kwargs = {"with_text": with_text, **model_kwargs}
        self.arch = arch
        clip = open_clip.create_model(
            arch,
            pretrained=tag if resolved == "pretrained" else None,
            force_quick_gelu=bool(tag_config.get("quick_gelu", False)),
            **{"pretrained_text": False, **model_kwargs},
        )
        if resolved not in (None, "pretrained"):
            load_weights_file(clip, resolved)

        preprocess = {**clip.visual.preprocess_cfg, **tag_config}
        size = preprocess["size"]
        self.preprocessing = Preprocessing(
            input_size=int(max(size) if isinstance(size, tuple | list) else size),
            mean=tuple(preprocess["mean"]),
            std=tuple(preprocess["std"]),
            interpolation=interpolation_name(preprocess["interpolation"]),
            crop_pct=1.0,
            crop_mode="squash" if preprocess["resize_mode"] == "squash" else "center",
        )

        self.model = clip.visual
        clip.visual = nn.Identity()
        self.text_model: nn.Module | None = clip if with_text else None
        self._tokenizer: Any = None
        self._all_tokens = (
            getattr(self.model, "attn_pool", None) is None
            and getattr(self.model, "pool_type", None) == "tok"
            and not getattr(self.model, "final_ln_after_pool", True)
            and getattr(self.model, "proj", None) is not None
        )
        if self._all_tokens:
            self.model.output_tokens = True
        self.output_kind = "tokens" if self._all_tokens else "pooled"
        self.has_cls_token = self._all_tokens
        self.feature_dim = self._probe_feature_dim()

    @property
    def tokenizer(self) -> Any:
        """open_clip's tokenizer for this architecture (built on first use)."""
        if self._tokenizer is None:
            import open_clip

            self._tokenizer = open_clip.get_tokenizer(self.arch)
        return self._tokenizer

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` -> ``(B, 1 + N, D)`` projected tokens (CLS first) or ``(B, D)``."""
        if not self._all_tokens:
            return self.model(images)
        pooled, patches = self.model(images)
        return torch.cat([pooled.unsqueeze(1), patches @ self.model.proj], dim=1)

    def set_grad_checkpointing(self, enabled: bool = True) -> None:
        """open_clip's ``set_grad_checkpointing`` of the image tower (and of the text tower when
        it is kept).

        Raises:
            ValueError: The tower does not checkpoint (open_clip's ModifiedResNet accepts the
                call and does nothing, so it is refused here).
        """
        from open_clip.modified_resnet import ModifiedResNet

        if enabled and isinstance(self.model, ModifiedResNet):
            raise ValueError(
                f"open_clip image tower {self.name} (a ModifiedResNet) has no gradient "
                "checkpointing; use a ViT architecture or set trainer.grad_checkpointing=false"
            )
        self.model.set_grad_checkpointing(enabled)
        # the CLIP model holding the text tower has had its image tower replaced by Identity, so
        # its own set_grad_checkpointing (which starts with the image tower) cannot be called
        text = getattr(self.text_model, "text", None)  # CustomTextCLIP's text tower
        if text is not None:
            text.set_grad_checkpointing(enabled)
        elif self.text_model is not None and hasattr(self.text_model, "transformer"):
            self.text_model.transformer.grad_checkpointing = enabled

    def blocks(self) -> list[tuple[str, nn.Module]]:
        found = first_module_list(self.model, ("resblocks", "blocks", "stages", "layers"))
        if not found:
            found = [
                (name, getattr(self.model, name))
                for name in ("layer1", "layer2", "layer3", "layer4")
                if hasattr(self.model, name)
            ]
        return [(f"model.{name}", module) for name, module in found]
