"""JPEG draft-mode decoding: large JPEGs decode at a reduced scale that still covers the resize,
with embeddings within a stated tolerance of the full decode; small images, other formats and
``draft_size=None`` decode exactly as before."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw, ImageFilter

from lookalike.data.dataset import ImageDataset
from lookalike.data.loading import load_image
from lookalike.data.records import ImageRecord, ImageSet
from lookalike.models import create_embedder
from lookalike.models.preprocessing import Preprocessing, eval_transform

# EfficientNet-Lite0 (ImageNet weights) embeddings of a large JPEG decoded with draft mode
# differ from those of the full decode by at most this cosine distance (measured: 8e-4 on the
# image below; at most 7e-3, mean 2.6e-3, on 16 Caltech photos upscaled to 3 Mpx) ...
DRAFT_COSINE_TOLERANCE = 0.01
# ... and the network inputs by at most this mean absolute difference (normalised units, where
# inputs span about 2; measured 3e-3).
DRAFT_INPUT_TOLERANCE = 0.02


def photo_like(width: int, height: int, seed: int = 0) -> Image.Image:
    """Smooth shapes on a gradient with a little noise: structure at every scale, as photos."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x / width * 200, y / height * 180, (x + y) / (width + height) * 220], -1)
    image = Image.fromarray(base.astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(40):
        x0, y0 = rng.integers(0, width), rng.integers(0, height)
        size = rng.integers(width // 20, width // 4)
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        draw.ellipse([x0, y0, x0 + size, y0 + size * 0.7], fill=colour)
    image = image.filter(ImageFilter.GaussianBlur(width / 400))
    noise = rng.normal(0, 6, (height, width, 3))
    return Image.fromarray(np.clip(np.asarray(image) + noise, 0, 255).astype(np.uint8))


@pytest.fixture(scope="module")
def large_jpeg(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("draft") / "large.jpg"
    photo_like(2048, 1536).save(path, quality=92)  # 3.1 Mpx, as a phone photo
    return path


def test_draft_decodes_a_large_jpeg_at_a_scale_that_covers_the_resize(large_jpeg: Path) -> None:
    full = load_image(large_jpeg)
    drafted = load_image(large_jpeg, draft_size=256)
    assert full.size == (2048, 1536)
    # libjpeg's largest reduction keeping both sides >= 256: 1536 // 256 = 6 -> 1/4
    assert drafted.size == (512, 384) and drafted.mode == "RGB"
    assert min(drafted.size) >= 256


def test_large_jpeg_embeddings_change_less_than_the_tolerance(large_jpeg: Path) -> None:
    embedder = create_embedder("efficientnet_lite:lite0", pool="gap").eval()
    preprocessing = embedder.preprocessing
    transform = eval_transform(preprocessing)
    full = transform(load_image(large_jpeg))
    drafted = transform(load_image(large_jpeg, draft_size=preprocessing.resize_size))
    assert (full - drafted).abs().mean() < DRAFT_INPUT_TOLERANCE
    assert not torch.equal(full, drafted)  # the draft path really ran
    with torch.no_grad():
        a, b = embedder(torch.stack([full, drafted]))
    assert 1 - float(a @ b) < DRAFT_COSINE_TOLERANCE


@pytest.mark.parametrize("size", [(300, 200), (600, 400), (511, 2000)])
def test_small_jpegs_decode_exactly_as_without_draft(tmp_path: Path, size: tuple[int, int]) -> None:
    # under twice the target on the short side: nothing to gain, so nothing changes
    path = tmp_path / "small.jpg"
    photo_like(*size).save(path, quality=90)
    full = np.asarray(load_image(path))
    drafted = np.asarray(load_image(path, draft_size=256))
    np.testing.assert_array_equal(drafted, full)


def test_other_formats_and_no_draft_size_are_untouched(tmp_path: Path, large_jpeg: Path) -> None:
    png = tmp_path / "large.png"
    photo_like(1024, 768).save(png)
    np.testing.assert_array_equal(np.asarray(load_image(png, draft_size=128)), np.asarray(load_image(png)))
    with Image.open(large_jpeg) as image:
        image.load()
        reference = np.asarray(image.convert("RGB"))
    np.testing.assert_array_equal(np.asarray(load_image(large_jpeg, draft_size=None)), reference)


def test_draft_keeps_the_exif_orientation(tmp_path: Path) -> None:
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, shown rotated 90 degrees clockwise: portrait
    photo_like(1600, 1000).save(path, quality=90, exif=exif)
    full, drafted = load_image(path), load_image(path, draft_size=200)
    assert full.size == (1000, 1600)
    assert drafted.size == (250, 400)  # 1/4 of the stored image, then turned upright
    small = np.asarray(full.resize(drafted.size, Image.Resampling.BOX), dtype=np.float64)
    assert np.abs(small - np.asarray(drafted, dtype=np.float64)).mean() < 4


def test_the_dataset_passes_the_draft_size_on(large_jpeg: Path) -> None:
    images = ImageSet([ImageRecord(id="a", path=large_jpeg, label="x")], name="one")
    preprocessing = Preprocessing(input_size=64, crop_pct=1.0)
    transform = eval_transform(preprocessing)
    drafted, _ = ImageDataset(images, transform, draft_size=64)[0]
    full, _ = ImageDataset(images, transform)[0]
    expected = transform(load_image(large_jpeg, draft_size=64))
    torch.testing.assert_close(drafted, expected, rtol=0, atol=0)
    assert not torch.equal(drafted, full)
