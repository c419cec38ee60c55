"""Test-time augmentation against torchvision, its averaging rule, and draft decoding end to end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from lookalike.data.records import ImageRecord, ImageSet
from lookalike.embed.extract import embed_image_set
from lookalike.embed.forward import embed_views
from lookalike.embed.tta import AugmentedViews
from lookalike.models.preprocessing import Preprocessing

DIM = 5


def torchvision_views(images: torch.Tensor, scales: list[float], flip: bool) -> list[torch.Tensor]:
    """The views built with torchvision: each scale (bilinear, antialiased), then its mirror."""
    height, width = images.shape[-2:]
    views = []
    for scale in scales:
        size = [max(1, round(height * scale)), max(1, round(width * scale))]
        scaled = images if scale == 1.0 else TF.resize(
            images, size, interpolation=InterpolationMode.BILINEAR, antialias=True
        )
        views.append(scaled)
        if flip:
            views.append(TF.horizontal_flip(scaled))
    return views


def test_views_equal_torchvision_flips_mirror_left_right() -> None:
    images = torch.rand(2, 3, 12, 10)
    augmentation = AugmentedViews.parse(["flip", "scale:0.5", "scale:1.5"])
    views = list(augmentation.views(images))
    expected = torchvision_views(images, [1.0, 0.5, 1.5], flip=True)
    assert [tuple(v.shape) for v in views] == [tuple(v.shape) for v in expected]
    for view, reference in zip(views, expected):
        torch.testing.assert_close(view, reference, atol=1e-6, rtol=0)
    # the mirror reverses columns (width), not rows
    torch.testing.assert_close(views[1][..., :, 0], images[..., :, -1])
    assert not torch.equal(views[1][..., 0, :], images[..., -1, :])


class PooledLinear(nn.Module):
    """Adaptive pool to 4x4 -> linear ``(B, D)``; normalises when asked; ``normalize`` is an
    attribute only when ``advertise``."""

    def __init__(self, normalises: bool, advertise: bool) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = nn.Linear(3 * 16, DIM)
        self.normalises = normalises
        if advertise:
            self.normalize = normalises
        self.embedding_dim = DIM

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        out = self.linear(torch.flatten(F.adaptive_avg_pool2d(images, 4), 1))
        return F.normalize(out, dim=1) if self.normalises else out


@pytest.mark.parametrize("advertise", [True, False], ids=["attribute", "inferred"])
@pytest.mark.parametrize("normalises", [True, False], ids=["unit", "raw"])
def test_the_mean_over_views_is_renormalised_only_when_the_embedder_normalises(
    normalises: bool, advertise: bool
) -> None:
    model = PooledLinear(normalises, advertise).eval()
    images = torch.rand(3, 3, 16, 16)
    names = ["flip", "scale:0.75"]
    with torch.no_grad():
        got = embed_views(model, images, AugmentedViews.parse(names), None)
        outputs = [model(v) for v in torchvision_views(images, [1.0, 0.75], flip=True)]
    mean = torch.stack(outputs).sum(dim=0) / 4
    expected = mean / mean.norm(dim=1, keepdim=True) if normalises else mean
    np.testing.assert_allclose(got, expected.numpy(), atol=1e-6)
    norms = np.linalg.norm(got, axis=1)
    assert np.allclose(norms, 1.0, atol=1e-5) == normalises
    # a single view is the embedder's own output
    with torch.no_grad():
        plain = embed_views(model, images, AugmentedViews(), None)
        np.testing.assert_array_equal(plain, model(images).numpy())


def test_inferred_normalisation_holds_under_bfloat16() -> None:
    model = PooledLinear(normalises=True, advertise=False).eval()
    images = torch.rand(4, 3, 16, 16)
    with torch.no_grad():
        got = embed_views(model, images, AugmentedViews.parse(["flip"]), torch.bfloat16)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def _photo(width: int, height: int) -> Image.Image:
    """Smooth gradient with a few blobs and a little noise (structure at every scale)."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x / width * 200, y / height * 180, (x + y) / (width + height) * 220], -1)
    for _ in range(12):
        cx, cy, r = rng.integers(0, width), rng.integers(0, height), rng.integers(20, width // 4)
        base[(x - cx) ** 2 + (y - cy) ** 2 < r**2] = rng.integers(0, 256, 3)
    noise = rng.normal(0, 4, base.shape)
    return Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8))


class CosineCheck(nn.Module):
    """A fixed random conv net (enough structure for a meaningful cosine) at 64 px."""

    normalize = True

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.net = nn.Sequential(
            nn.Conv2d(3, 16, 5, stride=2), nn.ReLU(), nn.Conv2d(16, 32, 3, stride=2), nn.ReLU(),
            nn.AdaptiveAvgPool2d(2), nn.Flatten(),
        )
        self.embedding_dim = 128
        self.preprocessing = Preprocessing(input_size=64, interpolation="bilinear", crop_pct=0.875)
        self.config = {"name": "cosine-check"}

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.net(images), dim=1)

    def fingerprint(self) -> str:
        return "cosine-check"


def test_draft_decoding_changes_embeddings_within_tolerance_and_never_small_images(
    tmp_path: Path,
) -> None:
    # resize_size = floor(64 / 0.875) = 73: drafted when both sides are >= 146
    large, small = tmp_path / "large.jpg", tmp_path / "small.jpg"
    _photo(1200, 900).save(large, quality=92)
    _photo(200, 140).save(small, quality=92)  # short side under 2 x 73: decoded in full
    image_set = ImageSet([ImageRecord("large", large), ImageRecord("small", small)], "g")
    model = CosineCheck()
    drafted = embed_image_set(model, image_set, device="cpu", num_workers=0, draft_decode=True)
    full = embed_image_set(model, image_set, device="cpu", num_workers=0, draft_decode=False)
    assert drafted.ids == full.ids == ["large", "small"]
    cosine = float(drafted.embeddings[0] @ full.embeddings[0])
    # tests/data/test_draft_decode.py documents 0.01 cosine distance for draft decoding
    assert 1 - cosine < 0.01
    assert not np.array_equal(drafted.embeddings[0], full.embeddings[0])  # the draft ran
    np.testing.assert_array_equal(drafted.embeddings[1], full.embeddings[1])
