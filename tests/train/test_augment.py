"""Every registered augmentation set: a normalised tensor of the model's size, seeded draws."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lookalike.models.preprocessing import Preprocessing, eval_transform
from lookalike.train.augment import AUGMENTATIONS, train_transform

PRE = Preprocessing(input_size=24, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), crop_pct=1.0)


@pytest.mark.parametrize("name", AUGMENTATIONS.names())
def test_every_augmentation_gives_a_normalised_tensor_of_model_size(name: str) -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (40, 30, 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    transform = train_transform(PRE, name)
    torch.manual_seed(3)
    out = transform(image)
    assert out.shape == (3, 24, 24) and out.dtype == torch.float32 and out.isfinite().all()
    # normalised pixels of [0, 1] lie in [(0 - 0.5) / 0.25, (1 - 0.5) / 0.25]
    assert out.min() >= -2.0 - 1e-5 and out.max() <= 2.0 + 1e-5
    torch.manual_seed(3)
    torch.testing.assert_close(transform(image), out)


@pytest.mark.parametrize("augment", ["weak", "strong"])
def test_train_transform_gives_normalised_tensor_of_model_size(augment: str) -> None:
    image = Image.fromarray(np.full((40, 30, 3), 255, dtype=np.uint8))
    out = train_transform(PRE, augment)(image)
    assert out.shape == (3, 24, 24) and out.dtype == torch.float32
    # white pixels, (1 - 0.5) / 0.25 = 2 wherever the crop keeps them (colour jitter aside)
    if augment == "weak":
        torch.testing.assert_close(out, torch.full_like(out, 2.0))


def test_train_transform_none_is_the_eval_transform(image_folder: Path) -> None:
    image = Image.open(next(image_folder.rglob("*.png"))).convert("RGB")
    torch.testing.assert_close(train_transform(PRE, "none")(image), eval_transform(PRE)(image))
    with pytest.raises(ValueError, match="valid names: none, rand_augment, strong, trivial_augment, weak"):
        train_transform(PRE, "medium")


@pytest.mark.parametrize("name", ["rand_augment", "trivial_augment"])
def test_strong_views_erase_and_take_options(name: str) -> None:
    image = Image.fromarray(np.full((40, 30, 3), 255, dtype=np.uint8))
    erased = train_transform(PRE, name, {"erasing": 1.0, "jitter": 0.0})
    torch.manual_seed(0)
    out = erased(image)
    assert out.shape == (3, 24, 24) and (out == 0).any()  # the erased rectangle is 0
    none = train_transform(PRE, name, {"erasing": 0.0, "jitter": 0.0, "crop_scale": 1.0})
    kinds = [type(step).__name__ for step in none.transforms]
    assert "RandomErasing" not in kinds and "RandomApply" not in kinds
    with pytest.raises(ValueError, match="does not take|unexpected keyword"):
        train_transform(PRE, name, {"strength": 3})
    with pytest.raises(ValueError, match="crop_scale must lie in"):
        train_transform(PRE, name, {"crop_scale": 0.0})


def test_rand_augment_options_reach_the_policy() -> None:
    transform = train_transform(PRE, "rand_augment", {"num_ops": 3, "magnitude": 12})
    policy = next(step for step in transform.transforms if type(step).__name__ == "RandAugment")
    assert policy.num_ops == 3 and policy.magnitude == 12
