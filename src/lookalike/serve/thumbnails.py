"""Thumbnails of catalogue images, re-encoded as JPEG and kept in a small cache.

The server never streams an image file as it is: it decodes the file the catalogue names for an
item and encodes a fresh JPEG, so whatever sits at that path, only pixels leave the server. A
file too large to decode safely is refused like an upload would be.
"""

from __future__ import annotations

import io
import warnings
from functools import lru_cache
from pathlib import Path

from PIL import Image, ImageOps

from lookalike.data.loading import to_rgb

CACHE_ENTRIES = 1024
JPEG_QUALITY = 85


class ThumbnailError(ValueError):
    """An item's image file that cannot be shown (missing, not an image, too large)."""


def thumbnail(path: Path, size: int, max_pixels: int) -> bytes:
    """JPEG bytes of the image at ``path``, its longest side at most ``size`` pixels.

    Raises:
        ThumbnailError: The file is missing, not an image, or over ``max_pixels``.
    """
    try:
        stat = path.stat()
    except OSError:
        raise ThumbnailError(f"the image file of this item is missing ({path.name})") from None
    return _cached(str(path), stat.st_mtime_ns, stat.st_size, int(size), int(max_pixels))


@lru_cache(maxsize=CACHE_ENTRIES)
def _cached(path: str, mtime_ns: int, file_size: int, size: int, max_pixels: int) -> bytes:
    del mtime_ns, file_size  # part of the cache key: a replaced file is read again
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(path) as image:
                if image.width * image.height > max_pixels:
                    raise ThumbnailError(
                        f"the image of this item has {image.width * image.height} pixels, over "
                        f"the limit of {max_pixels}"
                    )
                image.draft("RGB", (size, size))  # JPEG: decode at a reduced scale
                image.load()
                picture = to_rgb(ImageOps.exif_transpose(image))
        except ThumbnailError:
            raise
        except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as error:
            reason = " ".join(str(error).split())
            raise ThumbnailError(f"the image file of this item cannot be read ({reason})") from None
    picture.thumbnail((size, size), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()
