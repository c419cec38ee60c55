"""Decoding JPEGs on the embedding device: the workers read bytes, the device decodes the batch.

Meant for CUDA, where :func:`torchvision.io.decode_jpeg` decodes a whole batch with nvJPEG and
the eval transform runs on the GPU: worth turning on when decoding, not the model, is the wall
(a light model, few CPU cores per GPU). On the CPU it works (libjpeg-turbo, in the main process)
but is not faster than decoding in the DataLoader workers.

The path of an image::

    worker:  read the file; a complete, upright RGB or grayscale JPEG -> its bytes (1-D uint8)
             anything else -> load_image + eval transform, as without this option
    main:    decode_jpeg(the batch's bytes, device) -> eval transform on the device
             a JPEG the decoder refuses -> load_image + eval transform (broken: skipped, reported)

The transform is the same (:func:`~lookalike.models.preprocessing.eval_transform` resizes
tensors either way), so embeddings differ from the worker path only by the decoder: on the CPU
torchvision and Pillow both use libjpeg-turbo and give the same pixels, nvJPEG's IDCT and chroma
upsampling differ slightly; and large JPEGs are decoded here in full, not in Pillow's draft mode.
"""

from __future__ import annotations

import io
import logging
import os
import struct
import warnings
from collections.abc import Iterable, Iterator, Sequence
from typing import NamedTuple

import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.io import ImageReadMode, decode_jpeg

from lookalike.data.dataset import ImageDataset, Sample, collate_skipping_broken

logger = logging.getLogger(__name__)

# Modes decode_jpeg turns into the same RGB pixels as load_image (CMYK/YCCK inversion differs).
_DECODABLE_MODES = ("RGB", "L")
_EXIF_ORIENTATION = 0x0112
_END_OF_IMAGE = b"\xff\xd9"
# What Pillow raises on reading a malformed header; the worker path then reports it.
_HEADER_ERRORS = (
    OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError, KeyError,
    Image.DecompressionBombError,
)
# torchvision 0.29 deprecates its decoders in favour of TorchCodec; the warning comes per call.
_DEPRECATION = "The image decoding and encoding capabilities of TorchVision are deprecated"

Broken = list[tuple[int, str]]
Batch = tuple[torch.Tensor | None, torch.Tensor, Broken]


class EncodedJpeg(NamedTuple):
    """The file bytes ``(L,)`` uint8 of the image at ``index``, left for the device to decode."""

    data: torch.Tensor
    index: int


class EncodedBatch(NamedTuple):
    """A collated batch: ``images`` ``(B, 3, S, S)`` decoded in the workers (or ``None``) at
    ``indices`` ``(B,)``, encoded ``jpegs`` at ``jpeg_indices``, and ``(index, reason)`` of the
    broken images."""

    images: torch.Tensor | None
    indices: torch.Tensor
    jpegs: list[torch.Tensor]
    jpeg_indices: list[int]
    broken: Broken


class JpegBytesDataset(Dataset[Sample | EncodedJpeg]):
    """``images``' items, except that a JPEG the device can decode comes as its bytes.

    Args:
        images: The worker path: loads, transforms and reports broken images.

    Items are :class:`EncodedJpeg` for a complete (ends with the EOI marker), upright (no EXIF
    rotation) RGB or grayscale JPEG, and ``images[index]`` otherwise.
    """

    def __init__(self, images: ImageDataset) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> Sample | EncodedJpeg:
        record = self.images.image_set[index]
        data = None if record.unreadable else _read_decodable_jpeg(record.path)
        if data is None:
            return self.images[index]
        return EncodedJpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8), index)


def collate_jpeg_bytes(batch: Sequence[Sample | EncodedJpeg]) -> EncodedBatch:
    """Set the encoded JPEGs of ``batch`` aside and collate the rest with
    :func:`~lookalike.data.dataset.collate_skipping_broken`."""
    jpegs = [sample for sample in batch if isinstance(sample, EncodedJpeg)]
    others = [sample for sample in batch if not isinstance(sample, EncodedJpeg)]
    images, indices, broken = collate_skipping_broken(others)
    return EncodedBatch(
        images, indices, [jpeg.data for jpeg in jpegs], [jpeg.index for jpeg in jpegs], broken
    )


def decode_on_device(
    batches: Iterable[EncodedBatch], images: ImageDataset, device: torch.device
) -> Iterator[Batch]:
    """Finish each batch on ``device``: decode its JPEGs there and apply ``images.transform``.

    Args:
        batches: Collated by :func:`collate_jpeg_bytes` (a DataLoader over a
            :class:`JpegBytesDataset` of ``images``).
        images: The worker path, used here for a JPEG the device decoder refuses.
        device: Where the JPEGs are decoded (nvJPEG on CUDA) and transformed.

    Yields:
        What a DataLoader with :func:`~lookalike.data.dataset.collate_skipping_broken` yields:
        ``images`` ``(B, 3, S, S)`` on ``device`` (``None`` when none is readable), their
        ``indices`` ``(B,)`` in dataset order, and ``(index, reason)`` of the broken ones.
    """
    for batch in batches:
        readable: dict[int, torch.Tensor] = {}
        broken = list(batch.broken)
        if batch.images is not None:
            worker_images = batch.images.to(device, non_blocking=True)
            readable.update(zip(batch.indices.tolist(), worker_images, strict=True))
        decoded = _decode(batch.jpegs, device)
        for index, pixels in zip(batch.jpeg_indices, decoded, strict=True):
            if pixels is not None:
                readable[index] = images.transform(pixels)
                continue
            sample = images[index]  # the worker path, here in the main process
            if sample[0] is None:
                broken.append((index, str(sample[2])))  # type: ignore[misc]
            else:
                readable[index] = sample[0].to(device)
        order = sorted(readable)
        stacked = torch.stack([readable[index] for index in order]) if order else None
        yield stacked, torch.tensor(order, dtype=torch.int64), sorted(broken)


def _read_decodable_jpeg(path: str | os.PathLike[str]) -> bytes | None:
    """The bytes of ``path`` when :func:`decode_jpeg` gives the pixels ``load_image`` would:
    a complete, upright RGB or grayscale JPEG; otherwise (or unreadable) ``None``."""
    try:
        with open(path, "rb") as file:
            data = file.read()
    except OSError:
        return None
    # A truncated JPEG lacks the EOI marker; Pillow's path reports it (one with bytes after
    # EOI, as some cameras write, goes that way too).
    if not data.endswith(_END_OF_IMAGE):
        return None
    try:
        with Image.open(io.BytesIO(data)) as image:  # reads the header only
            decodable = (
                image.format == "JPEG"
                and image.mode in _DECODABLE_MODES
                and image.getexif().get(_EXIF_ORIENTATION, 1) == 1
            )
    except _HEADER_ERRORS:
        return None
    return data if decodable else None


def _decode(jpegs: list[torch.Tensor], device: torch.device) -> list[torch.Tensor | None]:
    """``(3, H, W)`` uint8 RGB on ``device`` for each JPEG, ``None`` for one the decoder refuses.

    The batch is decoded in one call (one nvJPEG batch on CUDA); as that call fails whole when
    one image fails, a failed batch is decoded again one image at a time.
    """
    if not jpegs:
        return []
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_DEPRECATION, category=DeprecationWarning)
        try:
            return list(decode_jpeg(jpegs, mode=ImageReadMode.RGB, device=device))
        except RuntimeError as error:
            logger.debug("batched decode_jpeg failed (%s); decoding one by one", error)
        decoded: list[torch.Tensor | None] = []
        for jpeg in jpegs:
            try:
                decoded.append(decode_jpeg(jpeg, mode=ImageReadMode.RGB, device=device))
            except RuntimeError as error:
                logger.debug("decode_jpeg refused an image (%s); decoding it with Pillow", error)
                decoded.append(None)
        return decoded
