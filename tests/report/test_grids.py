"""Thumbnail grids: border colours follow correctness, thumbnails show the images."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lookalike.report.grids import (
    PLACEHOLDER,
    QUERY_COLOUR,
    STATUS_COLOURS,
    GridRow,
    GridTile,
    encode_image,
    load_thumbnail,
    render_grid,
    tile_origin,
)


def _png(path: Path, colour: tuple[int, int, int], size: tuple[int, int] = (50, 30)) -> Path:
    Image.new("RGB", size, colour).save(path)
    return path


def test_borders_mark_correct_wrong_and_no_match(tmp_path: Path) -> None:
    red = _png(tmp_path / "red.png", (255, 0, 0))
    blue = _png(tmp_path / "blue.png", (0, 0, 255))
    rows = [
        GridRow(red, "red\nq0", [GridTile(red, "red", "correct"), GridTile(blue, "blue", "wrong"),
                                 GridTile(None, "no match", "no_match")]),
        GridRow(blue, "blue\nq1", [GridTile(tmp_path / "gone.png", "?", "wrong")]),
    ]
    size, border = 40, 3
    grid = np.asarray(render_grid(rows, thumb_size=size, border=border))
    expected = [
        [QUERY_COLOUR, STATUS_COLOURS["correct"], STATUS_COLOURS["wrong"],
         STATUS_COLOURS["no_match"]],
        [QUERY_COLOUR, STATUS_COLOURS["wrong"]],
    ]
    for i, colours in enumerate(expected):
        for j, colour in enumerate(colours):
            x, y = tile_origin(i, j, size, border)
            outer = size + 2 * border
            # Every border pixel (top, bottom, left and right edges) has the status colour.
            ring = np.concatenate([
                grid[y, x : x + outer], grid[y + outer - 1, x : x + outer],
                grid[y : y + outer, x], grid[y : y + outer, x + outer - 1],
                grid[y + border - 1, x + border : x + outer - border],
            ])
            assert (ring == colour).all(), (i, j)
    # Thumbnails: the centre of a tile shows its image (or the placeholder).
    def centre(i: int, j: int) -> tuple[int, ...]:
        x, y = tile_origin(i, j, size, border)
        return tuple(grid[y + border + size // 2, x + border + size // 2])

    assert centre(0, 0) == (255, 0, 0) and centre(0, 2) == (0, 0, 255)
    assert centre(1, 1) == PLACEHOLDER  # unreadable image
    # The fourth column of the second row is empty: background only.
    x, y = tile_origin(1, 3, size, border)
    assert (grid[y : y + size, x : x + size] == 255).all()


def test_thumbnail_keeps_aspect_on_white(tmp_path: Path) -> None:
    image = load_thumbnail(_png(tmp_path / "wide.png", (0, 128, 0), (100, 50)), 96)
    pixels = np.asarray(image)
    assert image.size == (96, 96)
    assert tuple(pixels[48, 48]) == (0, 128, 0)
    assert tuple(pixels[2, 48]) == (255, 255, 255)  # padding above the wide image
    assert tuple(np.asarray(load_thumbnail(None, 10))[0, 0]) == PLACEHOLDER


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="valid names: correct, wrong, no_match"):
        GridTile(None, "", "maybe")
    with pytest.raises(ValueError, match="at least one query row"):
        render_grid([])
    with pytest.raises(ValueError, match="valid names: JPEG, PNG"):
        encode_image(Image.new("RGB", (2, 2)), "GIF")


@pytest.mark.parametrize("image_format", ["PNG", "JPEG"])
def test_encode_image_round_trips(image_format: str) -> None:
    image = Image.new("RGB", (20, 10), (10, 200, 30))
    decoded = Image.open(io.BytesIO(encode_image(image, image_format)))
    assert decoded.format == image_format and decoded.size == (20, 10)
    assert np.abs(np.asarray(decoded).astype(int) - [10, 200, 30]).max() <= 3
