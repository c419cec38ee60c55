"""A tiny training setup shared by the training and after-training tests: 8 colour classes and a
``TrainConfig`` that trains a small timm model on them in seconds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from lookalike.config import resolve_config
from lookalike.train.config import TrainConfig


def write_images(root: Path) -> Path:
    """8 classes x 6 images of 32 px, each class a noisy colour."""
    rng = np.random.default_rng(0)
    for c in range(8):
        (root / f"c{c}").mkdir(parents=True)
        colour = rng.integers(0, 255, 3)
        for i in range(6):
            pixels = np.clip(colour + rng.integers(-60, 60, (32, 32, 3)), 0, 255)
            Image.fromarray(pixels.astype(np.uint8)).save(root / f"c{c}" / f"{i}.png")
    return root


TINY_SETTINGS = (
    "data.image_size=32",
    "data.batch_size=8",
    "data.m=2",
    "data.num_workers=0",
    "model.backbone=timm:test_efficientnet_gn",
    "model.weights=none",
    "model.head=linear:16",
    "loss.name=arcface",
    "trainer.max_epochs=3",
    "trainer.deterministic=true",
)
"""The tiny model and batches of every tiny training, whatever its data: a small timm net with
GroupNorm (no batch statistics), batches of 2 x 4 classes, 3 deterministic epochs."""


def tiny_config(images: Path, output: Path, *overrides: str) -> TrainConfig:
    """4 train classes (24 images), 2 val classes (12), batches of 8 = 2 x 4 classes."""
    return resolve_config(
        TrainConfig,
        overrides=[
            f"data.source=folder:{images}",
            "data.protocol_args.train_fraction=0.75",
            "data.protocol_args.val_fraction=0.34",
            *TINY_SETTINGS,
            "optim.lr=1e-3",
            "optim.head_lr=1e-2",
            f"output={output}",
            *overrides,
        ],
    )
