"""Uploaded images: sniffed by content, bounded in bytes and pixels, decoded as the gallery was.

The file name and the declared content type are ignored: Pillow identifies the bytes, and only
the formats in :data:`IMAGE_FORMATS` are accepted. The pixel count is read from the header and
checked *before* any pixel is decoded, so a decompression bomb (a small file that declares a huge
image) costs nothing. Accepted images go through the same conversion as gallery images
(:func:`lookalike.data.loading.to_rgb`, EXIF orientation applied) and, given the model's resize
size, a large JPEG is decoded at the reduced scale ``embed`` decodes it at (Pillow's draft mode,
:func:`lookalike.data.loading.load_image`), so a gallery image uploaded as a query embeds to its own
gallery row and a query file is answered as ``search_index`` answers it.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from PIL import Image, ImageOps

from lookalike.data.loading import draft_worthwhile, to_rgb
from lookalike.serve.errors import ApiError

# MPO is a JPEG with more pictures after the first (what many phone cameras write); Pillow
# names it apart, and its first picture is the photo, as the gallery loader reads it.
IMAGE_FORMATS = ("JPEG", "MPO", "PNG", "WEBP", "GIF", "BMP", "TIFF")
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, KeyError)


@dataclass(frozen=True)
class Upload:
    """One decoded upload.

    Attributes:
        name: The client's file name (for messages only; never used as a path).
        image: The upright 8-bit RGB image.
        format: Pillow's name of the sniffed format ("JPEG", "PNG" ...).
        data: The bytes as uploaded (kept when the image is added to the catalogue).
    """

    name: str
    image: Image.Image
    format: str
    data: bytes


def decode_upload(
    data: bytes, name: str, max_bytes: int, max_pixels: int, draft_size: int | None = None
) -> Upload:
    """Sniff, bound and decode one uploaded image.

    Args:
        data: The uploaded bytes.
        name: The client's file name, for messages.
        max_bytes: Largest accepted size.
        max_pixels: Largest accepted ``width * height``.
        draft_size: The side the model's transform resizes to first: a JPEG at least twice
            that size is decoded at a reduced scale, as ``embed`` decodes gallery files (its
            default ``draft_decode``); None decodes in full.

    Raises:
        ApiError: 413 when the file or its pixel count is over the limit, 415 when the bytes are
            not an image of an accepted format, 422 when they are one but cannot be decoded.
    """
    label = repr(name or "upload")
    if len(data) > max_bytes:
        raise ApiError(413, f"image {label} has {len(data)} bytes; the limit is {max_bytes}")
    if not data:
        raise ApiError(422, f"image {label} is empty (0 bytes)")
    with warnings.catch_warnings():
        # The pixel limit below is this server's own; Pillow's warning adds nothing.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            opened = Image.open(io.BytesIO(data))
        except Image.DecompressionBombError as error:
            raise ApiError(413, f"image {label} is too large to decode ({error})") from None
        except Image.UnidentifiedImageError:
            raise ApiError(
                415,
                f"{label} is not an image (its content was sniffed; accepted formats: "
                f"{', '.join(IMAGE_FORMATS)})",
            ) from None
        except _DECODE_ERRORS as error:
            raise ApiError(422, f"cannot read image {label}: {error}") from None
        with opened:
            if opened.format not in IMAGE_FORMATS:
                raise ApiError(
                    415,
                    f"image {label} is {opened.format}; accepted formats: "
                    f"{', '.join(IMAGE_FORMATS)}",
                )
            width, height = opened.size
            if width * height > max_pixels:
                raise ApiError(
                    413,
                    f"image {label} is {width}x{height} = {width * height} pixels; the limit is "
                    f"{max_pixels} (decompression bombs are refused before decoding)",
                )
            if width < 1 or height < 1:
                raise ApiError(422, f"image {label} has no pixels ({width}x{height})")
            try:
                if draft_size is not None and draft_worthwhile(opened, draft_size):
                    opened.draft("RGB", (draft_size, draft_size))
                opened.load()
                upright = ImageOps.exif_transpose(opened)
                image = to_rgb(upright)
            except _DECODE_ERRORS as error:
                reason = " ".join(str(error).split())
                raise ApiError(422, f"cannot decode image {label}: {reason}") from None
            sniffed = str(opened.format)
    return Upload(name=name, image=image, format=sniffed, data=data)


def file_suffix(image_format: str) -> str:
    """The usual file suffix of a Pillow format name ("JPEG" -> ".jpg")."""
    suffixes = {"JPEG": ".jpg", "MPO": ".jpg", "TIFF": ".tif"}
    return suffixes.get(image_format, f".{image_format.lower()}")
