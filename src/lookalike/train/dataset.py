"""Augmented training items and their batches.

Each image is augmented under a torch seed derived from ``(seed, epoch, index)`` (and, for a
further draw of the same image in its epoch, its repeat number; see
:data:`~lookalike.train.sampler.TrainKey`) (:mod:`lookalike.train.seeding`), so a batch is the
same whichever worker builds it, and two draws of one image are two views of it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import torch
from PIL import Image
from torch.utils.data import Dataset

from lookalike.data.loading import BrokenImageError, load_record
from lookalike.data.records import ImageSet
from lookalike.train.sampler import TrainKey
from lookalike.train.seeding import mix_seed

logger = logging.getLogger(__name__)


class TrainDataset(Dataset[dict[str, Any] | None]):
    """Augmented training images with their class codes, captions or second views.

    Args:
        images: The training records.
        transform: PIL image -> ``(3, S, S)`` augmented tensor.
        labels: ``(N,)`` class codes, or ``None`` for unlabelled data.
        with_text: Return each record's caption.
        two_views: Return a second augmented view of each image.
        seed: Base seed of the augmentations.
        view_transform: Transform of the second view (a strong one for consistency pairs);
            ``transform`` when ``None``.

    Items are dicts with ``image`` ``(3, S, S)``, ``index`` and, as configured, ``label``,
    ``caption`` and ``view`` ``(3, S, S)``; ``None`` for an unreadable image.
    """

    def __init__(
        self,
        images: ImageSet,
        transform: Callable[[Image.Image], torch.Tensor],
        labels: Sequence[int] | None,
        with_text: bool = False,
        two_views: bool = False,
        seed: int = 0,
        view_transform: Callable[[Image.Image], torch.Tensor] | None = None,
    ) -> None:
        self.images = images
        self.transform = transform
        self.view_transform = view_transform or transform
        self.labels = None if labels is None else list(labels)
        self.with_text = with_text
        self.two_views = two_views
        self.seed = seed

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key: TrainKey | int) -> dict[str, Any] | None:
        epoch, index, *repeat = key if isinstance(key, tuple) else (0, key)
        record = self.images[index]
        try:
            image = load_record(record)
        except BrokenImageError as error:
            logger.warning("skipping training image %s: %s", error.path, error.reason)
            return None
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(mix_seed(self.seed, epoch, index, *repeat))
            item: dict[str, Any] = {"image": self.transform(image), "index": index}
            if self.two_views:
                item["view"] = self.view_transform(image)
        if self.labels is not None:
            item["label"] = self.labels[index]
        if self.with_text:
            item["caption"] = record.caption or ""
        return item


def collate_train(batch: Sequence[dict[str, Any] | None]) -> dict[str, Any]:
    """Stack the readable items: ``images`` ``(B, 3, S, S)``, ``indices`` ``(B,)`` and, when
    present, ``labels`` ``(B,)`` int64, ``views`` ``(B, 3, S, S)``, ``captions`` (B strings)."""
    items = [item for item in batch if item is not None]
    if not items:
        return {"images": None, "indices": torch.zeros(0, dtype=torch.int64)}
    out: dict[str, Any] = {
        "images": torch.stack([item["image"] for item in items]),
        "indices": torch.tensor([item["index"] for item in items], dtype=torch.int64),
    }
    if "label" in items[0]:
        out["labels"] = torch.tensor([item["label"] for item in items], dtype=torch.int64)
    if "view" in items[0]:
        out["views"] = torch.stack([item["view"] for item in items])
    if "caption" in items[0]:
        out["captions"] = [item["caption"] for item in items]
    return out
