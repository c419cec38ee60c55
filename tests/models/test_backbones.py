"""Backbone adapters: a contract over every registered family, and each family's features
against its library's own outputs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file
from transformers import CLIPVisionConfig, Dinov2Config, Swinv2Config

from lookalike.models import BACKBONES, create_backbone, create_embedder
from lookalike.models.backbones import load_weights_file, read_state_dict

OPEN_CLIP_TINY: dict[str, Any] = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 8, "vocab_size": 100, "width": 32, "heads": 2, "layers": 1},
}


def dinov2_config(**overrides: Any) -> Dinov2Config:
    settings = {
        "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
        "intermediate_size": 64, "image_size": 32, "patch_size": 8,
    }  # fmt: skip
    return Dinov2Config(**{**settings, **overrides})


# One tiny, randomly initialised model per registered family: (name, kwargs, input side).
TINY: dict[str, tuple[str, dict[str, Any], int]] = {
    "timm": ("timm:vit_tiny_patch16_224", {"img_size": 32}, 32),
    "open_clip": ("open_clip:ViT-B-32/openai", OPEN_CLIP_TINY, 32),
    "hf": ("hf:tiny/dinov2", {"config": dinov2_config()}, 32),
    "torchvision": ("torchvision:resnet18", {}, 32),
    "efficientnet_lite": ("efficientnet_lite:lite0", {}, 32),
}
EXTRA = {
    "timm-cnn": ("timm:resnet18", {}, 32),
    "hf-swinv2": (
        "hf:tiny/swinv2",
        {"config": Swinv2Config(image_size=32, patch_size=4, embed_dim=16, depths=[1, 1],
                                num_heads=[1, 2], window_size=4)},
        32,
    ),
    "hf-clip": (
        "hf:tiny/clip",
        {"config": CLIPVisionConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                    intermediate_size=64, image_size=32, patch_size=8,
                                    projection_dim=16)},
        32,
    ),
    "torchvision-efficientnet": ("torchvision:efficientnet_b0", {}, 32),
    "torchvision-googlenet": ("torchvision:googlenet", {}, 64),
}  # fmt: skip


def test_every_registered_family_has_a_contract_case() -> None:
    assert set(TINY) == set(BACKBONES.names())


@pytest.mark.parametrize("case", [*TINY, *EXTRA])
def test_backbone_contract(case: str) -> None:
    name, kwargs, side = {**TINY, **EXTRA}[case]
    embedder = create_embedder(name, weights=None, **kwargs)
    backbone = embedder.backbone
    images = torch.randn(2, 3, side, side)
    features = backbone(images)
    expected_ndim = {"map": 4, "tokens": 3, "pooled": 2}[backbone.output_kind]
    assert features.ndim == expected_ndim
    width = features.shape[1] if backbone.output_kind == "map" else features.shape[-1]
    assert width == backbone.feature_dim
    assert backbone.blocks() and all(isinstance(m, torch.nn.Module) for _, m in backbone.blocks())
    block_names = [n for n, _ in backbone.blocks()]
    module_names = dict(backbone.named_modules())
    assert all(n in module_names for n in block_names)

    embeddings = embedder(images)
    assert embeddings.shape == (2, embedder.embedding_dim)
    torch.testing.assert_close(embeddings.norm(dim=1), torch.ones(2))
    embeddings.square().sum().backward()  # not the norm: its gradient is zero by construction
    first_block = backbone.blocks()[0][1]
    grads = [p.grad for p in first_block.parameters() if p.requires_grad]
    assert grads and any(g is not None and g.abs().sum() > 0 for g in grads)


def test_unknown_names_list_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="valid names: .*efficientnet_lite.*timm"):
        create_backbone("nosuchlib:model", weights=None)
    with pytest.raises(ValueError, match="prefix:model"):
        create_backbone("resnet18", weights=None)
    with pytest.raises(ValueError, match="unknown timm model 'resnet1800'.*resnet18"):
        create_backbone("timm:resnet1800", weights=None)
    with pytest.raises(ValueError, match="valid: .*resnet50"):
        create_backbone("torchvision:vgg16", weights=None)
    with pytest.raises(ValueError, match="valid: lite0, lite2"):
        create_backbone("efficientnet_lite:lite7", weights=None)
    with pytest.raises(ValueError, match="valid: .*ViT-B-32"):
        create_backbone("open_clip:ViT-Q-99/openai", weights=None)
    with pytest.raises(ValueError, match="unknown open_clip tag 'nosuchtag'.*openai"):
        create_backbone("open_clip:ViT-B-32/nosuchtag", weights=None, **OPEN_CLIP_TINY)


def test_timm_vit_tokens_are_cls_then_patches() -> None:
    backbone = create_backbone("timm:vit_tiny_patch16_224", weights=None, img_size=32, reg_tokens=2)
    images = torch.randn(2, 3, 32, 32)
    raw = backbone.model.forward_features(images)  # CLS, 2 registers, 4 patches
    tokens = backbone(images)
    assert raw.shape[1] == 7 and tokens.shape[1] == 5
    torch.testing.assert_close(tokens[:, 0], raw[:, 0])
    torch.testing.assert_close(tokens[:, 1:], raw[:, 3:])


def test_timm_cnn_map_matches_timm_pooled_features() -> None:
    import timm

    backbone = create_backbone("timm:resnet18", weights=None).eval()
    reference = timm.create_model("resnet18", pretrained=False, num_classes=0).eval()
    reference.load_state_dict(backbone.model.state_dict())
    images = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(backbone(images).mean(dim=(2, 3)), reference(images))


def test_open_clip_cls_token_is_clips_image_embedding() -> None:
    backbone = create_backbone("open_clip:ViT-B-32/openai", weights=None, **OPEN_CLIP_TINY).eval()
    images = torch.randn(2, 3, 32, 32)
    backbone.model.output_tokens = False
    clip_embedding = backbone.model(images)  # open_clip's own encode_image path
    backbone.model.output_tokens = True
    torch.testing.assert_close(backbone(images)[:, 0], clip_embedding)
    assert backbone.text_model is not None and hasattr(backbone.text_model, "encode_text")
    assert "text_model.token_embedding.weight" in backbone.state_dict()
    text = backbone.text_model.encode_text(torch.randint(0, 100, (2, 8)))
    assert text.shape == (2, 16)
    assert backbone.tokenizer(["a photo"]).shape[0] == 1
    without_text = create_backbone(
        "open_clip:ViT-B-32/openai", weights=None, with_text=False, **OPEN_CLIP_TINY
    )
    assert without_text.text_model is None


def test_hf_dinov2_tokens_drop_registers_and_cls_is_pooler() -> None:
    from transformers import Dinov2WithRegistersConfig

    config = Dinov2WithRegistersConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
        image_size=32, patch_size=8, num_register_tokens=3,
    )  # fmt: skip
    backbone = create_backbone("hf:tiny/dinov2-reg", weights=None, config=config).eval()
    images = torch.randn(2, 3, 32, 32)
    output = backbone.model(pixel_values=images)
    tokens = backbone(images)
    assert output.last_hidden_state.shape[1] == 1 + 3 + 16 and tokens.shape[1] == 1 + 16
    torch.testing.assert_close(tokens[:, 0], output.pooler_output)
    torch.testing.assert_close(tokens[:, 1:], output.last_hidden_state[:, 4:])


def test_hf_clip_cls_token_is_image_embeds() -> None:
    name, kwargs, _ = EXTRA["hf-clip"]
    backbone = create_backbone(name, weights=None, **kwargs).eval()
    images = torch.randn(2, 3, 32, 32)
    image_embeds = backbone.model(pixel_values=images).image_embeds
    torch.testing.assert_close(backbone(images)[:, 0], image_embeds)


def test_hf_swin_gap_is_the_models_pooler() -> None:
    name, kwargs, _ = EXTRA["hf-swinv2"]
    embedder = create_embedder(name, weights=None, normalize=False, **kwargs).eval()
    images = torch.randn(2, 3, 32, 32)
    assert embedder.config["pool"] == "gap" and not embedder.backbone.has_cls_token
    reference = embedder.backbone.model(pixel_values=images).pooler_output
    torch.testing.assert_close(embedder(images), reference)


@pytest.mark.parametrize("model_name", ["resnet18", "efficientnet_b0", "googlenet"])
def test_torchvision_map_then_gap_matches_torchvision_features(model_name: str) -> None:
    from torchvision.models import get_model

    backbone = create_backbone(f"torchvision:{model_name}", weights=None).eval()
    googlenet = {"aux_logits": False, "transform_input": True, "init_weights": False}
    kwargs = googlenet if model_name == "googlenet" else {}
    reference = get_model(model_name, weights=None, **kwargs).eval()
    if model_name == "efficientnet_b0":
        reference.classifier = torch.nn.Identity()
    else:
        reference.fc = torch.nn.Identity()
    reference.load_state_dict(backbone.model.state_dict(), strict=False)
    images = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(backbone(images).mean(dim=(2, 3)), reference(images))


def test_torchvision_preprocessing_from_weights_enum() -> None:
    backbone = create_backbone("torchvision:efficientnet_b3", weights=None)
    assert backbone.preprocessing.input_size == 300
    assert backbone.preprocessing.crop_pct == pytest.approx(300 / 320)
    assert backbone.preprocessing.interpolation == "bicubic"


def test_weights_file_round_trip_and_errors(tmp_path: Path) -> None:
    source = create_backbone("timm:resnet18", weights=None)
    path = tmp_path / "resnet18.safetensors"
    classifier = {"fc.weight": torch.zeros(10, 512), "fc.bias": torch.zeros(10)}
    full_model = {**source.model.state_dict(), **classifier}
    save_file(full_model, str(path))
    loaded = create_backbone("timm:resnet18", weights=path)  # classifier keys are ignored
    for key, value in source.model.state_dict().items():
        torch.testing.assert_close(loaded.model.state_dict()[key], value)

    torch_path = tmp_path / "resnet18.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in full_model.items()}}, torch_path)
    assert set(read_state_dict(torch_path)) == set(full_model)
    create_backbone("timm:resnet18", weights=torch_path)

    partial = {k: v for k, v in full_model.items() if not k.startswith("layer4")}
    save_file(partial, str(tmp_path / "partial.safetensors"))
    with pytest.raises(ValueError, match=r"partial\.safetensors.*missing keys.*layer4"):
        create_backbone("timm:resnet18", weights=tmp_path / "partial.safetensors")
    wrong = {**full_model, "conv1.weight": torch.zeros(8, 3, 7, 7)}
    save_file(wrong, str(tmp_path / "wrong.safetensors"))
    with pytest.raises(ValueError, match=r"wrong\.safetensors.*wrong shapes.*conv1\.weight"):
        create_backbone("timm:resnet18", weights=tmp_path / "wrong.safetensors")
    (tmp_path / "garbage.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match=r"cannot read weights file .*garbage\.safetensors"):
        create_backbone("timm:resnet18", weights=tmp_path / "garbage.safetensors")
    with pytest.raises(FileNotFoundError, match="absent.pth"):
        create_backbone("timm:resnet18", weights=tmp_path / "absent.pth")


def test_hf_weights_file_with_task_prefix(tmp_path: Path) -> None:
    source = create_backbone("hf:tiny/dinov2", weights=None, config=dinov2_config())
    prefixed = {f"dinov2.{k}": v.clone() for k, v in source.model.state_dict().items()}
    save_file(prefixed, str(tmp_path / "dinov2.safetensors"))
    target = create_backbone(
        "hf:tiny/dinov2", weights=tmp_path / "dinov2.safetensors", config=dinov2_config()
    )
    images = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(target.eval()(images), source.eval()(images))


def test_load_weights_file_names_the_model(tmp_path: Path) -> None:
    module = torch.nn.Linear(3, 2)
    save_file({"weight": torch.zeros(2, 3)}, str(tmp_path / "linear.safetensors"))
    expected = r"linear\.safetensors does not fit Linear: 1 missing keys \(e\.g\. bias\)"
    with pytest.raises(ValueError, match=expected):
        load_weights_file(module, tmp_path / "linear.safetensors")


@pytest.mark.parametrize(
    ("processor", "expected"),
    [
        (  # DINOv2 repositories: short side 256, centre crop 224
            {"size": {"shortest_edge": 256}, "do_center_crop": True,
             "crop_size": {"height": 224, "width": 224}, "resample": 3,
             "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]},
            (224, 224 / 256, "center", "bicubic"),
        ),
        (  # ViT / Swin V2 repositories: squash to 224
            {"size": {"height": 224, "width": 224}, "do_center_crop": False, "resample": 2,
             "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]},
            (224, 1.0, "squash", "bilinear"),
        ),
        (  # CLIP repositories: short side 224, centre crop 224
            {"size": {"shortest_edge": 224}, "do_center_crop": True, "crop_size": 224,
             "resample": 3},
            (224, 1.0, "center", "bicubic"),
        ),
    ],
)  # fmt: skip
def test_hf_preprocessing_from_image_processor_config(
    monkeypatch: pytest.MonkeyPatch, processor: dict, expected: tuple
) -> None:
    from transformers.image_processing_base import ImageProcessingMixin

    from lookalike.models.backbones.hf_backbone import _preprocessing

    def read(cls, name):
        return processor, {}

    monkeypatch.setattr(ImageProcessingMixin, "get_image_processor_dict", classmethod(read))
    result = _preprocessing("org/repo", dinov2_config(), from_hub=True)
    assert (result.input_size, result.crop_pct, result.crop_mode, result.interpolation) == expected
    if "image_mean" in processor:
        assert result.mean == tuple(processor["image_mean"])


def test_hf_preprocessing_falls_back_to_the_config(monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers.image_processing_base import ImageProcessingMixin

    from lookalike.models.backbones.hf_backbone import _preprocessing

    def unavailable(cls, name):
        raise OSError("offline")

    monkeypatch.setattr(ImageProcessingMixin, "get_image_processor_dict", classmethod(unavailable))
    result = _preprocessing("org/repo", dinov2_config(image_size=48), from_hub=True)
    assert result.input_size == 48 and result.crop_mode == "center"
