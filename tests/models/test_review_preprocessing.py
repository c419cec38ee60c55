"""Independent review: each adapter's eval transform against the one its own library applies.

The references are the libraries themselves, built offline with random weights: timm's
``resolve_data_config`` + ``create_transform``, the transformers image processor saved in a local
repository folder and read back by ``AutoImageProcessor``, open_clip's
``create_model_and_transforms(pretrained=None)`` and torchvision's ``weights.transforms()``.
timm, open_clip and torchvision resize PIL images, lookalike resizes uint8 tensors (antialiased):
pixels differ by rounding only (under 2/255, i.e. < 0.05 after normalisation, mean < 1e-3).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from lookalike.models import create_backbone
from lookalike.models.preprocessing import Preprocessing, eval_transform


def photo(width: int = 150, height: int = 97) -> Image.Image:
    """A smooth, non-square RGB image (gradients and a disc), so a wrong crop or scale shows."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    disc = ((x - 0.6 * width) ** 2 + (y - 0.4 * height) ** 2) < (0.25 * height) ** 2
    red = 255 * x / width
    green = 255 * y / height
    blue = np.where(disc, 230.0, 40.0 + 100 * np.sin(x / 9.0) ** 2)
    return Image.fromarray(np.stack([red, green, blue], -1).round().astype(np.uint8))


def assert_same_pixels(ours: torch.Tensor, reference: torch.Tensor) -> None:
    assert ours.shape == reference.shape
    difference = (ours - reference).abs()
    assert difference.max() < 0.05 and difference.mean() < 1e-3, (
        difference.max(),
        difference.mean(),
    )


@pytest.mark.parametrize(
    "overlay",
    [
        {"crop_mode": "squash", "crop_pct": 0.9},  # dm_nfnet_f0, eca_nfnet_l0 ...
        {"crop_mode": "center", "crop_pct": 1.15},  # volo_d4_448, volo_d5_448, volo_d5_512
        {"crop_mode": "center", "crop_pct": 0.95, "interpolation": "bilinear"},
        {"crop_mode": "squash", "crop_pct": 1.0},
        {"crop_mode": "center", "crop_pct": 1.0},
    ],
)
def test_timm_eval_transform_is_timms(overlay: dict[str, Any]) -> None:
    import timm
    from timm.data import create_transform, resolve_data_config

    settings = {"pretrained_cfg_overlay": {**overlay, "input_size": (3, 48, 48)}}
    backbone = create_backbone("timm:resnet18", weights=None, **settings)
    model = timm.create_model("resnet18", pretrained=False, **settings)
    reference = create_transform(**resolve_data_config(model=model))(photo())
    assert_same_pixels(eval_transform(backbone.preprocessing)(photo()), reference)


def test_timm_squash_keeps_the_crop_through_a_saved_model(tmp_path: Path) -> None:
    from lookalike.models import create_embedder, load_embedder, save_embedder

    embedder = create_embedder(
        "timm:resnet18", weights=None,
        pretrained_cfg_overlay={"crop_mode": "squash", "crop_pct": 0.9, "input_size": (3, 48, 48)},
    )  # fmt: skip
    loaded = load_embedder(save_embedder(embedder, tmp_path / "model"))
    assert loaded.preprocessing == embedder.preprocessing
    torch.testing.assert_close(loaded.eval_transform()(photo()), embedder.eval_transform()(photo()))


def _processors() -> dict[str, tuple[Any, Any]]:
    import transformers as hf

    small = {"num_hidden_layers": 1, "hidden_size": 16, "num_attention_heads": 2,
             "intermediate_size": 32, "patch_size": 16}  # fmt: skip
    tiny_cnn = {"hidden_sizes": [8, 8, 8, 8], "depths": [1, 1, 1, 1]}
    imagenet = {"image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]}
    return {
        # DeiT repositories: squash to 256 x 256, then the centre 224
        "deit": (hf.DeiTConfig(**small, image_size=224), hf.DeiTImageProcessor(**imagenet)),
        # ConvNeXt / ResNet / RegNet repositories: short side to 224 / crop_pct, centre 224 ...
        "convnext-224": (
            hf.ConvNextConfig(**tiny_cnn),
            hf.ConvNextImageProcessor(size={"shortest_edge": 224}, crop_pct=0.875, **imagenet),
        ),
        # ... and from 384 px on, a warp to S x S
        "convnext-384": (
            hf.ConvNextConfig(**tiny_cnn, image_size=384),
            hf.ConvNextImageProcessor(size={"shortest_edge": 384}, **imagenet),
        ),
        "resnet": (
            hf.ResNetConfig(**tiny_cnn, embedding_size=8),
            hf.ConvNextImageProcessor(size={"shortest_edge": 224}, crop_pct=0.875, **imagenet),
        ),
        "poolformer": (hf.PoolFormerConfig(), hf.PoolFormerImageProcessor()),
        "levit": (
            hf.LevitConfig(
                hidden_sizes=[16, 16, 16],
                num_attention_heads=[1, 1, 1],
                depths=[1, 1, 1],
                key_dim=[8, 8, 8],
            ),
            hf.LevitImageProcessor(),
        ),
        "dinov2": (
            hf.Dinov2Config(**{**small, "patch_size": 14}, image_size=224),
            hf.BitImageProcessor(size={"shortest_edge": 256}, crop_size=224, **imagenet),
        ),
        "vit": (hf.ViTConfig(**small, image_size=224), hf.ViTImageProcessor()),
        "vit-unnormalised": (
            hf.ViTConfig(**small, image_size=224),
            hf.ViTImageProcessor(do_normalize=False),
        ),
    }


@pytest.mark.parametrize(
    "case",
    ["deit", "convnext-224", "convnext-384", "resnet", "poolformer", "levit", "dinov2", "vit",
     "vit-unnormalised"],
)  # fmt: skip
def test_hf_eval_transform_is_the_image_processors(tmp_path: Path, case: str) -> None:
    from transformers import AutoImageProcessor

    config, processor = _processors()[case]
    config.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    backbone = create_backbone(f"hf:{tmp_path}", weights=None)
    # transformers' centre crop rounds a half-pixel offset down, torchvision's to even: a size
    # whose crop offsets are whole numbers compares the geometry without that 1-pixel shift
    image = photo(198, 140)
    reference = AutoImageProcessor.from_pretrained(tmp_path)(images=image)
    expected = torch.as_tensor(np.asarray(reference["pixel_values"][0]))
    assert_same_pixels(eval_transform(backbone.preprocessing)(image), expected)


def test_open_clip_eval_transform_is_open_clips() -> None:
    import open_clip

    tiny = {
        "embed_dim": 16,
        "vision_cfg": {"image_size": 48, "layers": 1, "width": 32, "patch_size": 16,
                       "head_width": 16},
        "text_cfg": {"context_length": 8, "vocab_size": 100, "width": 32, "heads": 2, "layers": 1},
    }  # fmt: skip
    backbone = create_backbone("open_clip:RN50/openai", weights=None, with_text=False)
    _, _, preprocess = open_clip.create_model_and_transforms("RN50", pretrained=None)
    assert_same_pixels(eval_transform(backbone.preprocessing)(photo()), preprocess(photo()))
    tag = open_clip.get_pretrained_cfg("ViT-B-32", "openai")
    backbone = create_backbone("open_clip:ViT-B-32/openai", weights=None, with_text=False, **tiny)
    _, _, preprocess = open_clip.create_model_and_transforms(
        "ViT-B-32", pretrained=None, image_mean=tag["mean"], image_std=tag["std"], **tiny
    )
    assert_same_pixels(eval_transform(backbone.preprocessing)(photo()), preprocess(photo()))


@pytest.mark.parametrize("name", ["resnet18", "efficientnet_b1", "mobilenet_v3_small"])
def test_torchvision_eval_transform_is_the_weights(name: str) -> None:
    from torchvision.models import get_model_weights

    backbone = create_backbone(f"torchvision:{name}", weights=None)
    transforms = get_model_weights(name).DEFAULT.transforms()
    preprocessing = backbone.preprocessing
    assert preprocessing.resize_size == transforms.resize_size[0]
    assert preprocessing.input_size == transforms.crop_size[0]
    assert preprocessing.interpolation == transforms.interpolation.value
    assert_same_pixels(eval_transform(preprocessing)(photo(300, 194)), transforms(photo(300, 194)))


def test_crop_pct_range() -> None:
    assert Preprocessing(input_size=448, crop_pct=1.15).resize_size == 389  # floor(448 / 1.15)
    for crop_pct in (0.0, -0.5, 2.5):
        with pytest.raises(ValueError, match="crop_pct"):
            Preprocessing(crop_pct=crop_pct)


@pytest.mark.parametrize(
    "stored",
    [
        # google/vit-base-patch16-224's file: an integer size the ViT processor squashes to
        {"feature_extractor_type": "ViTFeatureExtractor", "size": 224, "resample": 2,
         "do_normalize": True, "do_resize": True, "image_mean": [0.5] * 3, "image_std": [0.5] * 3},
        # no resample key: the ViT processor's own default (bilinear) applies
        {"image_processor_type": "ViTImageProcessor", "size": {"height": 224, "width": 224},
         "image_mean": [0.5] * 3, "image_std": [0.5] * 3},
        # openai/clip-vit-base-patch32's file: integer sizes the CLIP processor reads as short side
        {"feature_extractor_type": "CLIPFeatureExtractor", "size": 224, "crop_size": 224,
         "do_center_crop": True, "resample": 3},
    ],
)  # fmt: skip
def test_hf_legacy_processor_files_are_read_as_transformers_reads_them(
    tmp_path: Path, stored: dict[str, Any]
) -> None:
    import json

    from transformers import AutoImageProcessor, CLIPVisionConfig, ViTConfig

    small = {"num_hidden_layers": 1, "hidden_size": 16, "num_attention_heads": 2,
             "intermediate_size": 32, "patch_size": 16}  # fmt: skip
    clip = "CLIP" in stored.get("feature_extractor_type", "")
    config = CLIPVisionConfig(**small, projection_dim=8) if clip else ViTConfig(**small)
    config.save_pretrained(tmp_path)
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(stored))
    backbone = create_backbone(f"hf:{tmp_path}", weights=None)
    image = photo(198, 140)
    reference = AutoImageProcessor.from_pretrained(tmp_path)(images=image)
    expected = torch.as_tensor(np.asarray(reference["pixel_values"][0]))
    assert_same_pixels(eval_transform(backbone.preprocessing)(image), expected)


def test_hf_processor_size_without_a_side_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers import Dinov2Config
    from transformers.image_processing_base import ImageProcessingMixin

    from lookalike.models.backbones.hf_backbone import _preprocessing

    def read(cls: type, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
        return {"size": {"longest_edge": 512}, "resample": 3}, {}

    monkeypatch.setattr(ImageProcessingMixin, "get_image_processor_dict", classmethod(read))
    with pytest.raises(ValueError, match=r"hf:org/repo: image processor size .*longest_edge"):
        _preprocessing("org/repo", Dinov2Config(), from_hub=True)


@pytest.mark.parametrize("variant", ["lite0", "lite2"])
def test_efficientnet_lite_preprocessing_is_timms_tf_port(variant: str) -> None:
    from timm.data import create_transform, resolve_data_config
    from timm.models import get_pretrained_cfg

    backbone = create_backbone(f"efficientnet_lite:{variant}", weights=None)
    config = resolve_data_config(
        pretrained_cfg=get_pretrained_cfg(f"tf_efficientnet_{variant}").to_dict()
    )
    assert backbone.preprocessing.input_size == config["input_size"][-1]
    assert_same_pixels(
        eval_transform(backbone.preprocessing)(photo()), create_transform(**config)(photo())
    )
