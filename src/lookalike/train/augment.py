"""Training augmentations, by name: ``"weak"``, ``"strong"``, ``"rand_augment"``,
``"trivial_augment"`` or ``"none"``.

Each entry of :data:`AUGMENTATIONS` turns a model's :class:`Preprocessing` (and the entry's own
keyword options) into a transform from a PIL RGB image to an augmented ``(3, S, S)`` float tensor
normalised as the preprocessing says; a new set arrives by decoration::

    @AUGMENTATIONS.register("my_set")
    def my_set(preprocessing: Preprocessing) -> v2.Compose: ...

Consistency regularisation pairs a weak view (``"weak"``: crop and flip) with a strong one
(``"rand_augment"`` or ``"trivial_augment"``: crop, flip, an automatic policy, colour jitter and
random erasing, the strong branch of FixMatch, Sohn et al. 2020), both built from the model's own
preprocessing so that the views are what the model sees at its input size and normalisation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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


def _policy_augmentation(
    preprocessing: Preprocessing,
    policy: Any,
    crop_scale: float,
    jitter: float,
    erasing: float,
) -> v2.Compose:
    """Crop, flip, ``policy``, colour jitter (p 0.8), normalisation, then random erasing."""
    size = preprocessing.input_size
    if not 0.0 < crop_scale <= 1.0 or jitter < 0 or not 0.0 <= erasing <= 1.0:
        raise ValueError(
            "augmentation options: crop_scale must lie in (0, 1], jitter >= 0, erasing in [0, 1]; "
            f"got {crop_scale}, {jitter}, {erasing}"
        )
    steps: list[Any] = [
        v2.RandomResizedCrop(size, scale=(crop_scale, 1.0), antialias=True),
        v2.RandomHorizontalFlip(),
        policy,
    ]
    if jitter > 0:
        steps.append(
            v2.RandomApply([v2.ColorJitter(jitter, jitter, jitter, min(jitter / 4, 0.5))], p=0.8)
        )
    transform = _normalised(preprocessing, steps)
    if erasing > 0:
        transform.transforms.append(v2.RandomErasing(p=erasing, value=0))
    return transform


@AUGMENTATIONS.register("rand_augment")
def rand_augment(
    preprocessing: Preprocessing,
    num_ops: int = 2,
    magnitude: int = 9,
    crop_scale: float = 0.2,
    jitter: float = 0.4,
    erasing: float = 0.25,
) -> v2.Compose:
    """Strong view: crop at scale ``crop_scale``-1, flip, RandAugment (Cubuk et al., "RandAugment:
    Practical automated data augmentation with a reduced search space", CVPR-W 2020) with
    ``num_ops`` operations at ``magnitude`` (of 31 bins), colour jitter of strength ``jitter`` (p
    0.8) and random erasing with probability ``erasing`` (Zhong et al., AAAI 2020)."""
    policy = v2.RandAugment(num_ops=num_ops, magnitude=magnitude)
    return _policy_augmentation(preprocessing, policy, crop_scale, jitter, erasing)


@AUGMENTATIONS.register("trivial_augment")
def trivial_augment(
    preprocessing: Preprocessing,
    crop_scale: float = 0.2,
    jitter: float = 0.4,
    erasing: float = 0.25,
) -> v2.Compose:
    """Strong view: as ``"rand_augment"`` with TrivialAugment's one random operation at a random
    strength (Müller & Hutter, "TrivialAugment: Tuning-free Yet State-of-the-Art Data
    Augmentation", ICCV 2021) in place of RandAugment."""
    return _policy_augmentation(
        preprocessing, v2.TrivialAugmentWide(), crop_scale, jitter, erasing
    )


def train_transform(
    preprocessing: Preprocessing, augment: str, options: Mapping[str, Any] | None = None
) -> v2.Compose:
    """PIL RGB image -> augmented ``(3, S, S)`` tensor normalised as ``preprocessing`` says.

    Args:
        preprocessing: The model's input size, mean and std.
        augment: A name of :data:`AUGMENTATIONS`: "weak", "strong", "rand_augment",
            "trivial_augment" or "none".
        options: The entry's own keyword options (``{"magnitude": 12, "erasing": 0.5}``).

    Raises:
        ValueError: An unknown ``augment`` (the message lists the valid names) or an option the
            entry does not take.
    """
    try:
        return AUGMENTATIONS.create(augment, preprocessing, **dict(options or {}))
    except TypeError as exc:
        raise ValueError(f"augmentation {augment!r} with options {dict(options or {})}: {exc}") from None
