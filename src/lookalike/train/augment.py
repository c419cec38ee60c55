"""Training augmentations, by name: ``"weak"``, ``"strong"`` or ``"none"``.

Each entry of :data:`AUGMENTATIONS` turns a model's :class:`Preprocessing` into a transform from a
PIL RGB image to an augmented ``(3, S, S)`` float tensor normalised as the preprocessing says; a
new set arrives by decoration::

    @AUGMENTATIONS.register("my_set")
    def my_set(preprocessing: Preprocessing) -> v2.Compose: ...
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torchvision.transforms import v2

from lookalike.models.preprocessing import Preprocessing, eval_transform
from lookalike.registry import Registry

AUGMENTATIONS = Registry[v2.Compose]("augmentation")


def _normalised(preprocessing: Preprocessing, augmentations: Sequence[Any]) -> v2.Compose:
    """PIL image -> ``augmentations`` -> float tensor normalised by ``preprocessing``."""
    return v2.Compose(
        [
            v2.ToImage(),
            *augmentations,
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(list(preprocessing.mean), list(preprocessing.std)),
        ]
    )


@AUGMENTATIONS.register("none")
def no_augmentation(preprocessing: Preprocessing) -> v2.Compose:
    """The eval transform: resize and centre crop, no randomness."""
    return eval_transform(preprocessing)


@AUGMENTATIONS.register("weak")
def weak_augmentation(preprocessing: Preprocessing) -> v2.Compose:
    """Random resized crop at scale 0.35-1 and horizontal flip."""
    size = preprocessing.input_size
    return _normalised(
        preprocessing,
        [v2.RandomResizedCrop(size, scale=(0.35, 1.0), antialias=True), v2.RandomHorizontalFlip()],
    )


@AUGMENTATIONS.register("strong")
def strong_augmentation(preprocessing: Preprocessing) -> v2.Compose:
    """SimCLR's set: crop at scale 0.08-1, flip, colour jitter, grayscale and blur (Chen et al.,
    "A Simple Framework for Contrastive Learning of Visual Representations", ICML 2020)."""
    size = preprocessing.input_size
    return _normalised(
        preprocessing,
        [
            v2.RandomResizedCrop(size, scale=(0.08, 1.0), antialias=True),
            v2.RandomHorizontalFlip(),
            v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
            v2.RandomGrayscale(p=0.2),
            v2.RandomApply([v2.GaussianBlur(kernel_size=2 * (size // 20) + 1)], p=0.5),
        ],
    )


def train_transform(preprocessing: Preprocessing, augment: str) -> v2.Compose:
    """PIL RGB image -> augmented ``(3, S, S)`` tensor normalised as ``preprocessing`` says.

    Args:
        preprocessing: The model's input size, mean and std.
        augment: A name of :data:`AUGMENTATIONS`: "weak", "strong" or "none".

    Raises:
        ValueError: An unknown ``augment`` (the message lists the valid names).
    """
    return AUGMENTATIONS.create(augment, preprocessing)
