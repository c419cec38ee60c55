"""Preprocessing.crop_mode against timm's transforms, and its backward compatibility."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from timm.data import create_transform

from lookalike.models.preprocessing import Preprocessing, eval_transform


@pytest.mark.parametrize(
    ("crop_mode", "crop_pct"), [("center", 1.0), ("center", 0.9), ("squash", 1.0)]
)
def test_crop_mode_matches_timm(crop_mode: str, crop_pct: float) -> None:
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (60, 100, 3), dtype=np.uint8))
    preprocessing = Preprocessing(input_size=32, crop_pct=crop_pct, crop_mode=crop_mode)
    reference = create_transform(
        input_size=(3, 32, 32), interpolation="bicubic", mean=preprocessing.mean,
        std=preprocessing.std, crop_pct=crop_pct, crop_mode=crop_mode,
    )(image)  # fmt: skip
    ours = eval_transform(preprocessing)(image)
    assert ours.shape == reference.shape
    assert torch.mean(torch.abs(ours - reference)) < 0.02


def test_default_keeps_the_old_rule_and_round_trips() -> None:
    image = Image.fromarray(np.random.default_rng(1).integers(0, 255, (60, 100, 3), dtype=np.uint8))
    legacy = eval_transform(Preprocessing(input_size=32, crop_pct=1.0))(image)
    squash = eval_transform(Preprocessing(input_size=32, crop_pct=1.0, crop_mode="squash"))(image)
    torch.testing.assert_close(legacy, squash)
    old_dict = Preprocessing(input_size=32).to_dict()
    del old_dict["crop_mode"]  # a file written before the field existed
    assert Preprocessing.from_dict(old_dict).crop_mode is None
    centre = Preprocessing(input_size=32, crop_mode="center")
    assert Preprocessing.from_dict(centre.to_dict()) == centre
    with pytest.raises(ValueError, match="crop_mode"):
        Preprocessing(crop_mode="border")
