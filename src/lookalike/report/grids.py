"""Query → top-k thumbnail grids: one row per query, its results bordered by correctness.

The query tile has a blue border; each result a green (same class), red (other class) or grey
("no match", the rejection entry) one. Unreadable images become a grey placeholder tile, so a
grid never fails because one file moved.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont, ImageOps, UnidentifiedImageError

logger = logging.getLogger(__name__)

QUERY_COLOUR = (31, 119, 180)
STATUS_COLOURS = {
    "correct": (44, 160, 44),
    "wrong": (214, 39, 40),
    "no_match": (150, 150, 150),
}
BACKGROUND = (255, 255, 255)
PLACEHOLDER = (225, 225, 225)
CAPTION_HEIGHT = 26
GAP = 6


@dataclass
class GridTile:
    """One result of a query.

    Attributes:
        path: The image file, or None for a "no match" entry.
        caption: Text under the tile (label, score).
        status: "correct", "wrong" or "no_match".
    """

    path: str | Path | None
    caption: str
    status: str

    def __post_init__(self) -> None:
        if self.status not in STATUS_COLOURS:
            raise ValueError(
                f"unknown tile status {self.status!r}; valid names: {', '.join(STATUS_COLOURS)}"
            )


@dataclass
class GridRow:
    """A query and its ranked results, best first."""

    query_path: str | Path | None
    query_caption: str
    results: list[GridTile]


def load_thumbnail(path: str | Path | None, size: int) -> Image.Image:
    """The image at ``path`` fitted into ``size x size`` on white; a grey tile when unreadable."""
    if path is not None:
        try:
            with Image.open(path) as image:
                image.load()
                return ImageOps.pad(image.convert("RGB"), (size, size), color=BACKGROUND)
        except (OSError, UnidentifiedImageError, ValueError) as error:
            logger.debug("cannot read %s for a thumbnail: %s", path, error)
    return Image.new("RGB", (size, size), PLACEHOLDER)


def _tile(
    path: str | Path | None, caption: str, colour: tuple[int, int, int], size: int, border: int
) -> Image.Image:
    outer = size + 2 * border
    tile = Image.new("RGB", (outer, outer + CAPTION_HEIGHT), BACKGROUND)
    draw = ImageDraw.Draw(tile)
    draw.rectangle([0, 0, outer - 1, outer - 1], fill=colour)
    if path is None:
        draw.rectangle([border, border, outer - border - 1, outer - border - 1], fill=PLACEHOLDER)
        draw.text((outer / 2, outer / 2), "no match", fill=(60, 60, 60), anchor="mm", font=_font())
    else:
        tile.paste(load_thumbnail(path, size), (border, border))
    for line, text in enumerate(caption.splitlines()[:2]):
        draw.text((2, outer + 1 + 12 * line), _fit(text, outer), fill=(0, 0, 0), font=_font())
    return tile


def _font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=10)


def _fit(text: str, width: int) -> str:
    # The default font is about 6 px per character at size 10.
    limit = max(4, width // 6)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def render_grid(rows: list[GridRow], thumb_size: int = 96, border: int = 4) -> Image.Image:
    """One RGB image with a row per query: the query tile, a gap, then its results.

    Args:
        rows: Queries and their results.
        thumb_size: Side of each thumbnail in pixels.
        border: Width of the coloured border around each thumbnail.

    Returns:
        The grid; tile ``j`` of row ``i`` has its top-left corner at
        ``tile_origin(i, j, thumb_size, border)`` (``j = 0`` is the query).
    """
    if not rows:
        raise ValueError("a grid needs at least one query row")
    if thumb_size < 8 or border < 1:
        raise ValueError(f"thumb_size must be >= 8 and border >= 1, got {thumb_size}, {border}")
    columns = 1 + max(len(row.results) for row in rows)
    outer = thumb_size + 2 * border
    width = columns * (outer + GAP) + GAP
    height = len(rows) * (outer + CAPTION_HEIGHT + GAP) + GAP
    grid = Image.new("RGB", (width + GAP, height), BACKGROUND)
    for i, row in enumerate(rows):
        query = _tile(row.query_path, row.query_caption, QUERY_COLOUR, thumb_size, border)
        grid.paste(query, tile_origin(i, 0, thumb_size, border))
        for j, result in enumerate(row.results, start=1):
            colour = STATUS_COLOURS[result.status]
            path = None if result.status == "no_match" else result.path
            tile = _tile(path, result.caption, colour, thumb_size, border)
            grid.paste(tile, tile_origin(i, j, thumb_size, border))
    return grid


def tile_origin(row: int, column: int, thumb_size: int = 96, border: int = 4) -> tuple[int, int]:
    """Top-left pixel ``(x, y)`` of a tile's border in :func:`render_grid`'s image."""
    outer = thumb_size + 2 * border
    # The query column is followed by an extra gap that sets it apart from the results.
    x = GAP + column * (outer + GAP) + (GAP if column > 0 else 0)
    y = GAP + row * (outer + CAPTION_HEIGHT + GAP)
    return x, y


def encode_image(image: Image.Image, image_format: str = "PNG") -> bytes:
    """``image`` encoded as PNG or JPEG bytes."""
    if image_format not in ("PNG", "JPEG"):
        raise ValueError(f"unknown image format {image_format!r}; valid names: JPEG, PNG")
    buffer = io.BytesIO()
    if image_format == "JPEG":
        image.convert("RGB").save(buffer, format="JPEG", quality=85)
    else:
        image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()
