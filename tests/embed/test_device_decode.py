"""decode_on_device against the worker path: same rows, same skipped images, nearly the same
embeddings (the JPEG decoders and the resizers differ slightly), and the fallbacks it takes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from lookalike.data.dataset import ImageDataset
from lookalike.data.records import ImageRecord, ImageSet
from lookalike.embed import device_decode
from lookalike.embed.device_decode import EncodedJpeg, JpegBytesDataset
from lookalike.embed.extract import embed_image_set
from lookalike.embed.spec import EmbedSpec
from lookalike.embed.store import EmbeddingSet
from lookalike.models.preprocessing import Preprocessing, eval_transform
from lookalike.pipeline.embedding import check_embed_spec

DIM = 16
# Observed on the CPU: 0.999999 on these images (the large one, draft-decoded on the worker
# path, is the only row that differs); 0.9977 on pure-noise JPEGs of up to 300 px, the worst case.
MIN_COSINE = 0.99


class TinyEmbedder(nn.Module):
    """conv -> ReLU -> global average pool -> flatten -> L2 normalisation, random weights."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, DIM, 5, padding=2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.preprocessing = Preprocessing(input_size=32, interpolation="bicubic", crop_pct=0.875)
        self.config = {"name": "tiny-device-decode", "dim": DIM}
        self.normalize = True

    @property
    def embedding_dim(self) -> int:
        return DIM

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(torch.flatten(self.pool(F.relu(self.conv(images))), 1), dim=1)

    def fingerprint(self) -> str:
        return "tiny-device-decode"


def _embedder() -> TinyEmbedder:
    torch.manual_seed(0)
    return TinyEmbedder()


def _photo(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A smooth colour image with some texture and noise: ``(H, W, 3)`` uint8."""
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    phase = rng.uniform(0, 2 * np.pi, 3)
    channels = [
        128 + 90 * np.sin(2 * np.pi * (x * rng.uniform(1, 3) + y * rng.uniform(1, 3)) + p)
        for p in phase
    ]
    pixels = np.stack(channels, axis=-1) + rng.normal(0, 12, (height, width, 3))
    return np.clip(pixels, 0, 255).astype(np.uint8)


@pytest.fixture
def image_set(tmp_path: Path) -> ImageSet:
    """Seven JPEGs (one large enough for draft mode, one grayscale, one rotated by EXIF, one
    truncated), a PNG and a text file."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "images"
    folder.mkdir()
    paths = []
    for i, (height, width) in enumerate([(60, 80), (90, 50), (48, 48), (240, 160)]):
        path = folder / f"{i}.jpg"
        Image.fromarray(_photo(rng, height, width)).save(path, quality=90)
        paths.append(path)
    gray = folder / "gray.jpg"
    Image.fromarray(_photo(rng, 70, 64)[..., 0]).save(gray, quality=90)
    rotated = folder / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    Image.fromarray(_photo(rng, 50, 100)).save(rotated, quality=90, exif=exif)
    png = folder / "plain.png"
    Image.fromarray(_photo(rng, 64, 40)).save(png)
    truncated = folder / "truncated.jpg"
    Image.fromarray(_photo(rng, 80, 80)).save(truncated, quality=90)
    truncated.write_bytes(truncated.read_bytes()[:-400])
    text = folder / "text.jpg"
    text.write_text("not an image")
    ordered = [paths[0], text, paths[1], gray, png, rotated, paths[2], truncated, paths[3]]
    return ImageSet(
        [ImageRecord(id=path.stem, path=path, label="x") for path in ordered], "gallery"
    )


def _embed(image_set: ImageSet, **kwargs: object) -> EmbeddingSet:
    return embed_image_set(
        _embedder(), image_set, device="cpu", num_workers=0, batch_size=4, **kwargs  # type: ignore[arg-type]
    )


def _row_cosines(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    first = first / np.linalg.norm(first, axis=1, keepdims=True)
    second = second / np.linalg.norm(second, axis=1, keepdims=True)
    return (first * second).sum(axis=1)


def test_matches_the_worker_path(image_set: ImageSet) -> None:
    plain = _embed(image_set)
    on_device = _embed(image_set, decode_on_device=True)
    assert on_device.ids == plain.ids == ["0", "1", "gray", "plain", "rotated", "2", "3"]
    assert on_device.info["skipped"] == plain.info["skipped"]
    assert [entry["id"] for entry in plain.info["skipped"]] == ["text", "truncated"]
    cosines = _row_cosines(on_device.embeddings, plain.embeddings)
    assert cosines.min() >= MIN_COSINE, cosines
    # the images that take the worker path either way are embedded identically
    same = [plain.ids.index(name) for name in ("plain", "rotated")]
    np.testing.assert_allclose(on_device.embeddings[same], plain.embeddings[same], atol=1e-6)


def test_on_the_cpu_only_draft_mode_makes_a_difference(image_set: ImageSet) -> None:
    # torchvision and Pillow both decode with libjpeg-turbo, and the transform is the same
    full = _embed(image_set, draft_decode=False)
    on_device = _embed(image_set, decode_on_device=True)
    np.testing.assert_allclose(on_device.embeddings, full.embeddings, atol=1e-6)


def test_with_worker_processes(image_set: ImageSet) -> None:
    in_process = _embed(image_set, decode_on_device=True)
    workers = embed_image_set(
        _embedder(), image_set, device="cpu", num_workers=1, batch_size=4, decode_on_device=True
    )
    assert workers.ids == in_process.ids
    assert workers.info["skipped"] == in_process.info["skipped"]
    np.testing.assert_allclose(workers.embeddings, in_process.embeddings, atol=1e-6)


def test_only_complete_upright_rgb_or_gray_jpegs_reach_the_device(image_set: ImageSet) -> None:
    images = ImageDataset(image_set, eval_transform(_embedder().preprocessing))
    kinds = {
        record.id: isinstance(JpegBytesDataset(images)[i], EncodedJpeg)
        for i, record in enumerate(image_set)
    }
    assert kinds == {
        "0": True, "1": True, "2": True, "3": True, "gray": True,
        "text": False, "plain": False, "rotated": False, "truncated": False,
    }


def test_a_jpeg_the_decoder_refuses_takes_the_worker_path(
    image_set: ImageSet, monkeypatch: pytest.MonkeyPatch
) -> None:
    refused = (image_set.paths[0]).read_bytes()
    decode = device_decode.decode_jpeg

    def refusing(jpegs: object, **kwargs: object) -> object:
        batch = jpegs if isinstance(jpegs, list) else [jpegs]
        if any(bytes(jpeg.numpy()) == refused for jpeg in batch):
            raise RuntimeError("simulated refusal")
        return decode(jpegs, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(device_decode, "decode_jpeg", refusing)
    plain = _embed(image_set)
    on_device = _embed(image_set, decode_on_device=True)
    assert on_device.ids == plain.ids
    assert on_device.info["skipped"] == plain.info["skipped"]
    np.testing.assert_allclose(on_device.embeddings[0], plain.embeddings[0], atol=1e-6)
    assert _row_cosines(on_device.embeddings, plain.embeddings).min() >= MIN_COSINE


def test_the_ray_engine_refuses_it() -> None:
    with pytest.raises(ValueError, match="decode_on_device"):
        check_embed_spec(EmbedSpec(engine="ray", decode_on_device=True))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_nvjpeg_matches_the_worker_path(image_set: ImageSet) -> None:
    kwargs = {"device": "cuda", "num_workers": 0, "batch_size": 4, "amp": False}
    plain = embed_image_set(_embedder(), image_set, **kwargs)  # type: ignore[arg-type]
    on_device = embed_image_set(
        _embedder(), image_set, decode_on_device=True, **kwargs  # type: ignore[arg-type]
    )
    assert on_device.ids == plain.ids
    assert on_device.info["skipped"] == plain.info["skipped"]
    assert _row_cosines(on_device.embeddings, plain.embeddings).min() >= MIN_COSINE
