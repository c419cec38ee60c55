"""Our eval transform against timm's own, built from the same pretrained-config values."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from timm.data import create_transform

from lookalike.models.preprocessing import Preprocessing, eval_transform


@pytest.mark.parametrize(
    "preprocessing",
    [
        Preprocessing(input_size=64, crop_pct=0.875, interpolation="bicubic"),
        Preprocessing(input_size=48, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), interpolation="bilinear", crop_pct=1.0),
    ],
)
def test_matches_timm_eval_transform(preprocessing: Preprocessing) -> None:
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (90, 120, 3), dtype=np.uint8))
    ours = eval_transform(preprocessing)(image)
    timm_transform = create_transform(
        input_size=(3, preprocessing.input_size, preprocessing.input_size),
        interpolation=preprocessing.interpolation,
        mean=preprocessing.mean,
        std=preprocessing.std,
        crop_pct=preprocessing.crop_pct,
        crop_mode="center" if preprocessing.crop_pct < 1 else "squash",
    )
    reference = timm_transform(image)
    assert ours.shape == reference.shape == (3, preprocessing.input_size, preprocessing.input_size)
    # PIL (timm) and tensor (torchvision v2) resampling differ by rounding only.
    assert torch.mean(torch.abs(ours - reference)) < 0.02


def test_round_trip_and_validation() -> None:
    preprocessing = Preprocessing(input_size=260, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    assert Preprocessing.from_dict(preprocessing.to_dict()) == preprocessing
    with pytest.raises(ValueError, match="interpolation"):
        Preprocessing(interpolation="lanczos9")
    with pytest.raises(ValueError, match="crop_pct"):
        Preprocessing(crop_pct=2.5)
