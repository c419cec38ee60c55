"""Safe image loading: every file becomes an upright 8-bit RGB image or a one-line error.

Real collections hold phone photos rotated by an EXIF tag, scans in CMYK, PNG icons with a
transparent background, 16-bit microscopy or depth maps, files cut short by a failed download and
text files named ``.jpg``. :func:`load_image` turns each of the first kinds into what the network
expects (RGB, upright, 8 bits per channel) and each of the last into a :class:`BrokenImageError`,
which the dataset reports and skips instead of crashing a long extraction.

Pillow's decompression-bomb guard (``PIL.Image.MAX_IMAGE_PIXELS``) is left on: an image that
trips it is reported as broken, with how to raise the limit deliberately for trusted data.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from lookalike.data.records import ImageRecord

WHITE = (255, 255, 255)
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa")
# What Pillow's decoders raise on a file that is corrupt in one way or another.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError, KeyError)


class BrokenImageError(ValueError):
    """An image file that cannot be used: missing, empty, truncated, not an image, too large.

    Attributes:
        path: The file.
        reason: Why it cannot be used, in a few words.
    """

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = Path(path)
        self.reason = " ".join(str(reason).split())
        super().__init__(f"cannot load image {self.path}: {self.reason}")

    def __reduce__(self) -> tuple[type[BrokenImageError], tuple[Path, str]]:
        # Keep the two-argument constructor picklable across DataLoader worker processes.
        return (type(self), (self.path, self.reason))


def load_record(record: ImageRecord, draft_size: int | None = None) -> Image.Image:
    """The image of ``record`` (:func:`load_image`); a record its source marked unreadable fails.

    Raises:
        BrokenImageError: The source could not use the entry (``record.unreadable``), or the
            file cannot be loaded.
    """
    if record.unreadable:
        raise BrokenImageError(record.path, record.unreadable)
    return load_image(record.path, draft_size=draft_size)


def load_image(path: str | os.PathLike[str], draft_size: int | None = None) -> Image.Image:
    """Read ``path`` as an upright 8-bit RGB image, fully decoded.

    * The EXIF orientation tag is applied (:func:`PIL.ImageOps.exif_transpose`).
    * Grayscale, palette, CMYK, YCbCr, LAB and HSV images are converted to RGB.
    * Transparent images (RGBA, LA, palette with a transparent colour) are composited on white.
    * 16-bit images (``I;16*``) are scaled by 255/65535; 32-bit integer images (``I``) likewise
      when any value exceeds 255 (they come from 16-bit sources) and are taken as 8-bit otherwise;
      float images (``F``) are scaled from [0, 1] when all values lie there and min-max stretched
      to [0, 255] otherwise. Values are clipped to the range and non-finite values set to 0.
    * The pixels are decoded here (``Image.load``), so a truncated file fails here, not later.
    * With ``draft_size``, a JPEG at least twice that size on both sides is decoded at a
      reduced scale (1/2, 1/4 or 1/8, libjpeg's DCT scaling through Pillow's draft mode) that
      keeps both sides ``>= draft_size``: a transform that resizes to ``draft_size`` then sees
      nearly the same pixels, decoded several times faster. Other images are decoded in full.

    Args:
        path: The image file.
        draft_size: The side, in pixels, the image is resized to next (for a centre crop, the
            short side before the crop); ``None`` decodes at full size.

    Returns:
        A PIL image in mode ``"RGB"``, independent of the file (which is closed).

    Raises:
        BrokenImageError: The file is missing, empty, truncated, not a readable image, or larger
            than ``PIL.Image.MAX_IMAGE_PIXELS`` allows.
    """
    path = Path(path)
    if not path.exists():
        raise BrokenImageError(path, "file not found")
    if not path.is_file():
        raise BrokenImageError(path, "not a regular file")
    if path.stat().st_size == 0:
        raise BrokenImageError(path, "file is empty (0 bytes)")
    try:
        with Image.open(path) as image:
            if draft_size is not None and draft_worthwhile(image, draft_size):
                image.draft("RGB", (draft_size, draft_size))
            image.load()
            upright = ImageOps.exif_transpose(image)
        return to_rgb(upright)
    except Image.DecompressionBombError as error:
        raise BrokenImageError(
            path,
            f"{error} If this image is trusted, raise the limit deliberately before loading, e.g. "
            "`PIL.Image.MAX_IMAGE_PIXELS = 300_000_000` (None disables the guard).",
        ) from error
    except Image.UnidentifiedImageError as error:
        raise BrokenImageError(path, "not an image file Pillow can identify") from error
    except _DECODE_ERRORS as error:
        raise BrokenImageError(path, f"{type(error).__name__}: {error}") from error


def draft_worthwhile(image: Image.Image, draft_size: int) -> bool:
    """A JPEG whose sides are both at least twice ``draft_size`` (smaller ones would not shrink)."""
    return image.format == "JPEG" and min(image.size) >= 2 * draft_size


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert a decoded image of any Pillow mode to 8-bit RGB (see :func:`load_image`)."""
    if image.mode == "RGB":
        return image
    if image.mode in _SIXTEEN_BIT_MODES:
        pixels = np.asarray(image).astype(np.float64) * (255.0 / 65535.0)
        return _gray_to_rgb(pixels)
    if image.mode == "I":
        pixels = np.asarray(image).astype(np.float64)
        if pixels.size and pixels.max() > 255:
            pixels = pixels * (255.0 / 65535.0)
        return _gray_to_rgb(pixels)
    if image.mode == "F":
        return _gray_to_rgb(_stretch_float(np.asarray(image).astype(np.float64)))
    if image.mode in _ALPHA_MODES or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, WHITE + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _stretch_float(pixels: np.ndarray) -> np.ndarray:
    """Float pixels -> [0, 255]: x255 when they lie in [0, 1], else min-max stretched."""
    finite = np.isfinite(pixels)
    pixels = np.where(finite, pixels, 0.0)
    if not finite.any():
        return pixels
    low, high = pixels[finite].min(), pixels[finite].max()
    if low >= 0.0 and high <= 1.0:
        return pixels * 255.0
    if high == low:
        return np.zeros_like(pixels)
    return (pixels - low) * (255.0 / (high - low))


def _gray_to_rgb(pixels: np.ndarray) -> Image.Image:
    """``(H, W)`` values on the 0-255 scale -> RGB image (rounded, clipped)."""
    gray = np.clip(np.rint(pixels), 0, 255).astype(np.uint8)
    return Image.fromarray(gray).convert("RGB")
