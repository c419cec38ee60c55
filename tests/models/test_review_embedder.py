"""Independent review: a saved model rebuilds the same transform and outputs; pooling against
timm's own pools and the GeM formula; image modes reach the model as RGB."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lookalike.data.loading import load_image
from lookalike.models import create_embedder, load_embedder, save_embedder
from lookalike.models.training_checkpoint import CHECKPOINT_FORMAT, CHECKPOINT_KEY


def _trained_vit(image_size: int) -> torch.nn.Module:
    """A tiny timm ViT with registers, input side changed as ``data.image_size`` does."""
    embedder = create_embedder(
        "timm:vit_tiny_patch16_224", weights=None, head="linear:8", img_size=image_size,
        reg_tokens=2,
    )  # fmt: skip
    embedder.preprocessing = replace(embedder.preprocessing, input_size=image_size)
    return embedder.eval()


def test_saved_folder_and_training_checkpoint_rebuild_the_same_model(tmp_path: Path) -> None:
    embedder = _trained_vit(48)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (70, 90, 3), np.uint8))
    pixels = embedder.eval_transform()(image).unsqueeze(0)
    assert pixels.shape == (1, 3, 48, 48)
    with torch.no_grad():
        expected = embedder(pixels)

    checkpoint = tmp_path / "last.ckpt"
    torch.save(
        {
            CHECKPOINT_KEY: {
                "format": CHECKPOINT_FORMAT,
                "embedder_config": embedder.config,
                "preprocessing": embedder.preprocessing.to_dict(),
                "embedding_dim": embedder.embedding_dim,
                "finetune": {"strategy": "full"},
            },
            "state_dict": {f"embedder.{k}": v for k, v in embedder.state_dict().items()},
        },
        checkpoint,
    )
    for loaded in (
        load_embedder(save_embedder(embedder, tmp_path / "model")),
        load_embedder(checkpoint),
    ):
        assert loaded.preprocessing == embedder.preprocessing
        assert loaded.fingerprint() == embedder.fingerprint()
        rebuilt = loaded.eval_transform()(image).unsqueeze(0)
        assert torch.equal(rebuilt, pixels)
        with torch.no_grad():
            assert torch.equal(loaded(rebuilt), expected)


def test_vit_poolings_are_timms_and_the_gem_formula() -> None:
    embedder = create_embedder(
        "timm:vit_tiny_patch16_224", weights=None, pool="cls", normalize=False, img_size=32,
        reg_tokens=3,
    ).eval()  # fmt: skip
    model = embedder.backbone.model
    assert model.num_prefix_tokens == 4  # class token + 3 registers
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        raw = model.forward_features(images)
        tokens = embedder.backbone(images)
        model.global_pool = "token"
        timm_token = model.forward_head(raw, pre_logits=True)
        model.global_pool = "avg"  # timm's average leaves out every prefix token
        timm_average = model.forward_head(raw, pre_logits=True)
        model.global_pool = ""
        torch.testing.assert_close(embedder(images), timm_token, rtol=0, atol=0)
        gap = create_embedder(
            "timm:vit_tiny_patch16_224", weights=None, pool="gap", normalize=False, img_size=32,
            reg_tokens=3,
        ).eval()  # fmt: skip
        gap.load_state_dict(embedder.state_dict())
        torch.testing.assert_close(gap(images), timm_average)

        gem = create_embedder(
            "timm:vit_tiny_patch16_224", weights=None, pool="gem", normalize=False, img_size=32,
            reg_tokens=3, pool_kwargs={"p": 2.5},
        ).eval()  # fmt: skip
        gem.load_state_dict(embedder.state_dict(), strict=False)
        patches = raw[:, 4:]  # Radenović et al.: (mean_k max(x_k, eps)^p)^(1/p) per channel
        naive = torch.stack(
            [
                torch.stack([(patches[b, :, c].clamp(min=1e-6) ** 2.5).mean() ** (1 / 2.5)
                             for c in range(patches.shape[2])])
                for b in range(patches.shape[0])
            ]
        )  # fmt: skip
        torch.testing.assert_close(gem(images), naive, rtol=1e-5, atol=1e-6)
    assert tokens.shape[1] == 1 + 4


@pytest.mark.parametrize(
    ("mode", "pixels", "rgb"),
    [
        ("L", np.full((6, 9), 200, np.uint8), (200, 200, 200)),
        ("I;16", np.full((6, 9), 65535, np.uint16), (255, 255, 255)),
        ("I;16", np.full((6, 9), 32896, np.uint16), (128, 128, 128)),
        ("RGBA", np.tile(np.array([255, 0, 0, 0], np.uint8), (6, 9, 1)), (255, 255, 255)),
        ("RGBA", np.tile(np.array([0, 0, 255, 255], np.uint8), (6, 9, 1)), (0, 0, 255)),
    ],
)
def test_png_modes_reach_the_model_as_rgb(
    tmp_path: Path, mode: str, pixels: np.ndarray, rgb: tuple
) -> None:
    path = tmp_path / "image.png"
    Image.fromarray(pixels, mode=mode if mode != "I;16" else None).save(path)
    with Image.open(path) as stored:
        assert stored.mode == mode
    image = load_image(path)
    assert image.mode == "RGB" and image.getpixel((4, 3)) == rgb
    embedder = create_embedder("timm:resnet18", weights=None)
    assert embedder.eval_transform()(image).shape == (3, 224, 224)


def test_non_square_timm_input_is_refused_in_one_line() -> None:
    with pytest.raises(ValueError, match=r"img_size=\(32, 48\) is not square.*img_size=48"):
        create_embedder("timm:vit_tiny_patch16_224", weights=None, img_size=(32, 48))
    square = create_embedder("timm:vit_tiny_patch16_224", weights=None, img_size=[32, 32])
    assert square.preprocessing.input_size == 32


def test_hf_vit_mae_embeds_every_patch_in_order() -> None:
    from transformers import ViTConfig, ViTMAEConfig, ViTModel

    sizes = {"num_hidden_layers": 1, "hidden_size": 16, "num_attention_heads": 2,
             "intermediate_size": 32, "patch_size": 8, "image_size": 32}  # fmt: skip
    embedder = create_embedder("hf:tiny/mae", weights=None, config=ViTMAEConfig(**sizes)).eval()
    # the same encoder without MAE's masking: a plain ViT holding the MAE weights
    reference = ViTModel(ViTConfig(**sizes), add_pooling_layer=False).eval()
    reference.load_state_dict(embedder.backbone.model.state_dict())
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        tokens = embedder.backbone(images)
        torch.testing.assert_close(tokens, reference(pixel_values=images).last_hidden_state)
        assert torch.equal(embedder(images), embedder(images))
