"""ImageDataset returns a sentinel for broken images; the collate function sets them aside."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from lookalike.data.dataset import ImageDataset, collate_skipping_broken
from lookalike.data.records import ImageRecord, ImageSet


def _to_tensor(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).float()


@pytest.fixture
def mixed_set(tmp_path: Path) -> tuple[ImageSet, list[np.ndarray]]:
    """5 records: images at 0, 2, 4; an empty file at 1; a missing file at 3."""
    rng = np.random.default_rng(0)
    records, pixels = [], []
    for i in range(5):
        path = tmp_path / f"{i}.png"
        if i == 1:
            path.write_bytes(b"")
        elif i != 3:
            array = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
            Image.fromarray(array).save(path)
            pixels.append(array)
        records.append(ImageRecord(id=f"img{i}", path=path))
    return ImageSet(records), pixels


def test_items_are_tensors_or_sentinels(mixed_set, caplog: pytest.LogCaptureFixture) -> None:
    image_set, pixels = mixed_set
    dataset = ImageDataset(image_set, _to_tensor)
    assert len(dataset) == 5
    with caplog.at_level(logging.WARNING, logger="lookalike.data.dataset"):
        items = [dataset[i] for i in range(5)]
    good = [item for item in items if item[0] is not None]
    assert [item[1] for item in good] == [0, 2, 4]
    for (tensor, _), array in zip(good, pixels):
        np.testing.assert_array_equal(tensor.permute(1, 2, 0).numpy(), array)
    assert items[1][0] is None and items[1][1] == 1 and "empty" in items[1][2]
    assert items[3][0] is None and items[3][1] == 3 and "not found" in items[3][2]
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 2 and "img1" in warned[0] and "img3" in warned[1]


def test_collate_stacks_good_and_lists_broken() -> None:
    a, b = torch.zeros(3, 2, 2), torch.ones(3, 2, 2)
    images, indices, broken = collate_skipping_broken([(a, 5), (None, 6, "empty"), (b, 7)])
    assert images is not None and images.shape == (2, 3, 2, 2)
    torch.testing.assert_close(images, torch.stack([a, b]))
    assert indices.dtype == torch.int64 and indices.tolist() == [5, 7]
    assert broken == [(6, "empty")]


def test_collate_all_broken() -> None:
    images, indices, broken = collate_skipping_broken([(None, 0, "x"), (None, 1, "y")])
    assert images is None and indices.shape == (0,)
    assert broken == [(0, "x"), (1, "y")]


def test_dataloader_with_workers_keeps_order_and_reports(mixed_set) -> None:
    image_set, pixels = mixed_set
    loader = DataLoader(
        ImageDataset(image_set, _to_tensor),
        batch_size=2,
        num_workers=2,
        collate_fn=collate_skipping_broken,
    )
    seen, broken = [], []
    for images, indices, batch_broken in loader:
        broken.extend(batch_broken)
        if images is not None:
            seen.extend(zip(indices.tolist(), images))
    assert [index for index, _ in seen] == [0, 2, 4]
    for (_, tensor), array in zip(seen, pixels):
        np.testing.assert_array_equal(tensor.permute(1, 2, 0).numpy(), array)
    assert [index for index, _ in broken] == [1, 3]
