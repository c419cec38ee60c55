"""A torch dataset over an :class:`ImageSet` that reports broken images instead of raising.

One unreadable file in a million must not stop an extraction. :class:`ImageDataset` returns a
sentinel ``(None, index, reason)`` for it, and :func:`collate_skipping_broken` drops those samples
from the batch while handing their indices and reasons back to the caller, who records them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import torch
from PIL import Image
from torch.utils.data import Dataset

from lookalike.data.loading import BrokenImageError, load_record
from lookalike.data.records import ImageSet

logger = logging.getLogger(__name__)

GoodSample = tuple[torch.Tensor, int]
BrokenSample = tuple[None, int, str]
Sample = GoodSample | BrokenSample


class ImageDataset(Dataset[Sample]):
    """The images of ``image_set``, loaded with :func:`~lookalike.data.loading.load_record` and
    passed through ``transform``.

    Args:
        image_set: The records, read in their order.
        transform: PIL RGB image -> float tensor ``(3, S, S)`` (e.g.
            :func:`lookalike.models.preprocessing.eval_transform`).
        draft_size: The side ``transform`` resizes to first; large JPEGs are then decoded at a
            reduced scale that keeps it (see :func:`~lookalike.data.loading.load_image`).
            ``None`` decodes every image at full size.

    Items are ``(image (3, S, S), index)`` for a readable image and ``(None, index, reason)`` for
    a broken one (a warning is logged); ``index`` is the position in ``image_set``.
    """

    def __init__(
        self,
        image_set: ImageSet,
        transform: Callable[[Image.Image], torch.Tensor],
        draft_size: int | None = None,
    ) -> None:
        self.image_set = image_set
        self.transform = transform
        self.draft_size = draft_size

    def __len__(self) -> int:
        return len(self.image_set)

    def __getitem__(self, index: int) -> Sample:
        record = self.image_set[index]
        try:
            image = load_record(record, draft_size=self.draft_size)
        except BrokenImageError as error:
            logger.warning("skipping image %s (id %s): %s", error.path, record.id, error.reason)
            return (None, index, error.reason)
        return (self.transform(image), index)


def collate_skipping_broken(
    batch: Sequence[Sample],
) -> tuple[torch.Tensor | None, torch.Tensor, list[tuple[int, str]]]:
    """Stack the readable samples of ``batch`` and set the broken ones aside.

    Args:
        batch: Items of :class:`ImageDataset`.

    Returns:
        ``images`` ``(B, 3, S, S)`` of the ``B`` readable samples (``None`` when ``B == 0``),
        their dataset ``indices`` ``(B,)`` int64 in batch order, and ``broken``: ``(index,
        reason)`` for each broken sample.
    """
    images: list[torch.Tensor] = []
    indices: list[int] = []
    broken: list[tuple[int, str]] = []
    for sample in batch:
        if sample[0] is None:
            broken.append((int(sample[1]), str(sample[2])))  # type: ignore[misc]
        else:
            images.append(sample[0])
            indices.append(int(sample[1]))
    stacked = torch.stack(images) if images else None
    return stacked, torch.tensor(indices, dtype=torch.int64), broken
