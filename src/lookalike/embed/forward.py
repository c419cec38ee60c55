"""The forward pass of embedding, shared by the local and the Ray engines.

:class:`Extraction` holds how images are batched, decoded (in DataLoader workers, or as JPEGs on
the device) and run through the embedder with mixed precision, channels-last memory and
test-time augmentation (:mod:`lookalike.embed.tta`); :func:`evaluating` puts an embedder in
eval mode on its device for a block. :mod:`lookalike.embed.extract` drives it over shards on one
machine, :mod:`lookalike.embed.ray_engine` inside each Ray actor.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from lookalike.data.dataset import ImageDataset, collate_skipping_broken
from lookalike.data.records import ImageSet
from lookalike.embed.device_decode import (
    Batch,
    JpegBytesDataset,
    collate_jpeg_bytes,
    decode_on_device,
)
from lookalike.embed.shards import batches_from
from lookalike.embed.tta import AugmentedViews
from lookalike.models.preprocessing import Preprocessing, eval_transform
from lookalike.utils.cores import CorePlan, limit_worker_threads

# Rows whose norm is this close to 1 count as L2-normalised (loose enough for bf16 outputs).
_UNIT_NORM_TOLERANCE = 1e-2


class EmbedderLike(Protocol):
    """What extraction needs of an embedder (``lookalike.models`` provides one).

    Attributes:
        embedding_dim: ``D``, the width of the output.
        preprocessing: The evaluation preprocessing the embedder was trained with.
        config: JSON-serialisable description of how the embedder was built.
        training: ``nn.Module``'s train/eval flag.
    """

    embedding_dim: int
    preprocessing: Preprocessing
    config: dict[str, Any]
    training: bool

    def fingerprint(self) -> str:
        """A string that changes whenever the embedder's outputs could change."""
        ...

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, S, S)`` normalised images -> ``(B, D)`` embeddings."""
        ...

    def eval(self) -> Any: ...

    def train(self, mode: bool = True) -> Any: ...

    def to(self, *args: Any, **kwargs: Any) -> Any: ...


@dataclass(frozen=True)
class Extraction:
    """How images are batched, decoded and run through the embedder."""

    batch_size: int
    cores: CorePlan
    device: torch.device
    amp_dtype: torch.dtype | None
    channels_last: bool
    augmentation: AugmentedViews
    shard_size: int
    shard_seconds: float
    draft_decode: bool
    decode_on_device: bool = False

    def loader(self, embedder: EmbedderLike, image_set: ImageSet, start: int) -> Iterable[Batch]:
        """Batches of the images from ``start`` on, in order, decoded and resized in the
        workers (pinned for a non-blocking copy on CUDA), or with ``decode_on_device`` their
        JPEGs decoded and resized on the device."""
        preprocessing = embedder.preprocessing
        images = ImageDataset(
            image_set,
            eval_transform(preprocessing),
            # the short side the transform resizes to; a squash resize needs no more
            draft_size=preprocessing.resize_size if self.draft_decode else None,
        )
        batches = batches_from(start, len(image_set), self.batch_size)
        if self.decode_on_device:
            jpegs = self._data_loader(JpegBytesDataset(images), batches, collate_jpeg_bytes)
            return decode_on_device(jpegs, images, self.device)
        return self._data_loader(images, batches, collate_skipping_broken)

    def _data_loader(
        self, dataset: Dataset[Any], batches: Iterable[list[int]], collate: Callable[[Any], Any]
    ) -> DataLoader:
        workers = self.cores.workers
        return DataLoader(
            dataset,
            batch_sampler=batches,
            num_workers=workers,
            collate_fn=collate,
            pin_memory=self.device.type == "cuda",
            worker_init_fn=limit_worker_threads if workers else None,
        )

    def embed(self, embedder: EmbedderLike, images: torch.Tensor) -> np.ndarray:
        """``(B, 3, S, S)`` images on the host -> ``(B, D)`` float32 embeddings."""
        images = images.to(self.device, non_blocking=True)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return embed_views(embedder, images, self.augmentation, self.amp_dtype)


def amp_dtype_for(device: torch.device, amp: bool | None) -> torch.dtype | None:
    """The autocast dtype, or ``None`` for full precision."""
    if amp is None:
        amp = device.type == "cuda"
    if not amp:
        return None
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16


@contextlib.contextmanager
def evaluating(embedder: EmbedderLike, device: torch.device, channels_last: bool) -> Iterator[None]:
    """Eval mode on ``device`` (channels-last if asked) for the block; train flag restored after."""
    was_training = embedder.training
    embedder.eval()
    if channels_last:
        embedder.to(device=device, memory_format=torch.channels_last)
    else:
        embedder.to(device=device)
    try:
        yield
    finally:
        embedder.train(was_training)


def embed_views(
    embedder: EmbedderLike,
    images: torch.Tensor,
    augmentation: AugmentedViews,
    amp_dtype: torch.dtype | None,
) -> np.ndarray:
    """``(B, 3, S, S)`` -> ``(B, D)`` float32: the mean embedding over the augmentation's views,
    L2-normalised again when the embedder normalises (its boolean ``normalize`` attribute, or,
    without one, every view's rows being unit-norm)."""
    outputs = []
    for view in augmentation.views(images):
        autocast = (
            torch.autocast(images.device.type, dtype=amp_dtype)
            if amp_dtype is not None
            else contextlib.nullcontext()
        )
        with autocast:
            output = embedder(view)
        if output.shape != (images.shape[0], embedder.embedding_dim):
            raise ValueError(
                f"embedder returned shape {tuple(output.shape)} for {images.shape[0]} images; "
                f"expected ({images.shape[0]}, {embedder.embedding_dim}) (embedding_dim)"
            )
        outputs.append(output.float())
    views = torch.stack(outputs)
    mean = views.mean(dim=0)
    normalizes = getattr(embedder, "normalize", None)
    if not isinstance(normalizes, bool):
        unit_norm = (torch.linalg.vector_norm(views, dim=2) - 1).abs() <= _UNIT_NORM_TOLERANCE
        normalizes = bool(unit_norm.all())
    if len(outputs) > 1 and normalizes:
        mean = F.normalize(mean, dim=1)
    return mean.cpu().numpy()
