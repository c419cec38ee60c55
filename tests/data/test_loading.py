"""load_image: every kind of file becomes upright 8-bit RGB, or a one-line BrokenImageError."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lookalike.data.loading import BrokenImageError, load_image

ORIENTATION = 0x0112


def _pixels(path: Path) -> np.ndarray:
    image = load_image(path)
    assert image.mode == "RGB"
    return np.asarray(image)


def test_rgb_png_round_trips_exactly(tmp_path: Path) -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "a.png")
    np.testing.assert_array_equal(_pixels(tmp_path / "a.png"), pixels)


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    # Stored 40 wide x 20 high, red left half, blue right half; orientation 6 means the camera
    # was turned: the upright picture is the stored one rotated 90 degrees clockwise.
    stored = np.zeros((20, 40, 3), np.uint8)
    stored[:, :20] = (255, 0, 0)
    stored[:, 20:] = (0, 0, 255)
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    Image.fromarray(stored).save(tmp_path / "rotated.jpg", exif=exif, quality=95)

    upright = _pixels(tmp_path / "rotated.jpg")
    assert upright.shape == (40, 20, 3)
    top, bottom = upright[5, 10], upright[35, 10]
    assert top[0] > 200 and top[2] < 60  # the stored left (red) half is now on top
    assert bottom[2] > 200 and bottom[0] < 60


def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path: Path) -> None:
    values = np.array([[0, 257, 32896, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    pixels = _pixels(tmp_path / "deep.png")
    expected = np.rint(values.astype(np.float64) * 255 / 65535).astype(np.uint8)
    for channel in range(3):
        np.testing.assert_array_equal(pixels[..., channel], expected)


@pytest.mark.parametrize(
    ("values", "expected"),
    [([0, 32896, 65535], [0, 128, 255]), ([0, 17, 255], [0, 17, 255])],
    ids=["sixteen-bit-range", "eight-bit-range"],
)
def test_32_bit_integer_image(tmp_path: Path, values: list[int], expected: list[int]) -> None:
    Image.fromarray(np.array([values], dtype=np.int32)).save(tmp_path / "int.tif")
    assert Image.open(tmp_path / "int.tif").mode == "I"
    np.testing.assert_array_equal(_pixels(tmp_path / "int.tif")[0, :, 1], expected)


def test_float_image_in_unit_range_is_scaled(tmp_path: Path) -> None:
    values = np.array([[0.0, 0.5, 1.0]], dtype=np.float32)
    Image.fromarray(values, mode="F").save(tmp_path / "float.tif")
    np.testing.assert_array_equal(_pixels(tmp_path / "float.tif")[0, :, 0], [0, 128, 255])


def test_float_image_outside_unit_range_is_stretched(tmp_path: Path) -> None:
    values = np.array([[-10.0, 0.0, 30.0]], dtype=np.float32)
    Image.fromarray(values, mode="F").save(tmp_path / "depth.tif")
    np.testing.assert_array_equal(_pixels(tmp_path / "depth.tif")[0, :, 0], [0, 64, 255])


def test_grayscale_becomes_three_equal_channels(tmp_path: Path) -> None:
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    Image.fromarray(gray).save(tmp_path / "gray.png")
    pixels = _pixels(tmp_path / "gray.png")
    for channel in range(3):
        np.testing.assert_array_equal(pixels[..., channel], gray)


def test_cmyk_jpeg_becomes_rgb(tmp_path: Path) -> None:
    # Pure cyan ink (C=255) is (0, 255, 255) in RGB under Pillow's naive conversion.
    Image.new("CMYK", (16, 16), (255, 0, 0, 0)).save(tmp_path / "cmyk.jpg", quality=100)
    pixels = _pixels(tmp_path / "cmyk.jpg")
    np.testing.assert_allclose(pixels[8, 8], (0, 255, 255), atol=3)


def test_palette_transparency_is_composited_on_white(tmp_path: Path) -> None:
    image = Image.new("P", (4, 4), 0)
    image.putpalette([0, 0, 0, 200, 10, 10] + [0] * 762)
    image.putpixel((0, 0), 1)
    image.save(tmp_path / "icon.png", transparency=0)  # colour 0 (black) is transparent
    pixels = _pixels(tmp_path / "icon.png")
    np.testing.assert_array_equal(pixels[0, 0], (200, 10, 10))
    np.testing.assert_array_equal(pixels[3, 3], (255, 255, 255))


def test_rgba_is_alpha_composited_on_white(tmp_path: Path) -> None:
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., 0] = 100
    rgba[..., 3] = [[0, 255], [128, 51]]
    Image.fromarray(rgba).save(tmp_path / "alpha.png")
    red = _pixels(tmp_path / "alpha.png")[..., 0].astype(float)
    alpha = rgba[..., 3] / 255.0
    np.testing.assert_allclose(red, 100 * alpha + 255 * (1 - alpha), atol=1)


def test_la_is_composited_on_white(tmp_path: Path) -> None:
    Image.new("LA", (2, 2), (0, 0)).save(tmp_path / "la.png")
    np.testing.assert_array_equal(_pixels(tmp_path / "la.png"), np.full((2, 2, 3), 255))


@pytest.mark.parametrize(
    ("make", "reason_part"),
    [
        (lambda path: None, "not found"),
        (lambda path: path.write_bytes(b""), "empty"),
        (lambda path: path.write_text("this is not a jpeg\n" * 10), "not an image"),
    ],
    ids=["missing", "empty", "text"],
)
def test_unusable_files_raise_broken_image_error(tmp_path: Path, make, reason_part: str) -> None:
    path = tmp_path / "bad.jpg"
    make(path)
    with pytest.raises(BrokenImageError, match=reason_part) as caught:
        load_image(path)
    assert caught.value.path == path
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)
    assert isinstance(caught.value, ValueError)


def test_truncated_jpeg_fails_at_load(tmp_path: Path) -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "full.jpg", quality=90)
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(BrokenImageError, match="truncated") as caught:
        load_image(tmp_path / "cut.jpg")
    assert "cut.jpg" in str(caught.value)


def test_decompression_bomb_guard_stays_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    Image.new("RGB", (64, 64)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 64 * 64 // 4)  # the file is > 2x the limit
    with pytest.raises(BrokenImageError, match="MAX_IMAGE_PIXELS"):
        load_image(tmp_path / "big.png")


def test_broken_image_error_pickles(tmp_path: Path) -> None:
    error = pickle.loads(pickle.dumps(BrokenImageError(tmp_path / "x.jpg", "file is empty")))
    assert error.path == tmp_path / "x.jpg" and error.reason == "file is empty"
