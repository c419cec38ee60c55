"""Shared fixtures: tiny generated images, and the path to ../shared/data when it is there."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _seed_and_threads() -> None:
    torch.manual_seed(0)
    np.random.seed(0)
    torch.set_num_threads(1)


@pytest.fixture
def shared_data() -> Path:
    """``../shared/data``; the test is skipped where the folder is absent (a user's machine)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} is absent")
    return SHARED_DATA


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """A folder-per-class tree: 3 classes x 4 RGB images of 32x24 px, each class its own colour."""
    from PIL import Image

    root = tmp_path / "images"
    rng = np.random.default_rng(0)
    colours = {"cat": (200, 30, 30), "dog": (30, 200, 30), "fox": (30, 30, 200)}
    for name, colour in colours.items():
        (root / name).mkdir(parents=True)
        for i in range(4):
            pixels = np.clip(np.array(colour) + rng.integers(-20, 20, (24, 32, 3)), 0, 255)
            Image.fromarray(pixels.astype(np.uint8)).save(root / name / f"{name}_{i}.png")
    return root
