"""Training items: augmented as a function of (seed, epoch, index); batches skip broken images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from lookalike.data.records import ImageRecord, ImageSet
from lookalike.data.sources import load_source
from lookalike.models.preprocessing import Preprocessing, eval_transform
from lookalike.train.augment import train_transform
from lookalike.train.dataset import TrainDataset, collate_train

PRE = Preprocessing(input_size=24, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), crop_pct=1.0)


def test_augmentation_is_a_function_of_seed_epoch_and_index(image_folder: Path) -> None:
    images = load_source(f"folder:{image_folder}")
    transform = train_transform(PRE, "strong")
    dataset = TrainDataset(images, transform, [0] * len(images), two_views=True)
    first = dataset[(2, 5)]
    dataset[(0, 1)]
    torch.rand(10)
    again = dataset[(2, 5)]
    torch.testing.assert_close(first["image"], again["image"])
    torch.testing.assert_close(first["view"], again["view"])
    assert not torch.equal(first["image"], first["view"])
    assert not torch.equal(first["image"], dataset[(3, 5)]["image"])


def test_collate_drops_broken_images_and_stacks_fields(tmp_path: Path) -> None:
    good = tmp_path / "a.png"
    Image.fromarray(np.zeros((10, 10, 3), dtype=np.uint8)).save(good)
    bad = tmp_path / "b.png"
    bad.write_bytes(b"not an image")
    records = [
        ImageRecord("a", good, "x", caption="a cat"),
        ImageRecord("b", bad, "y", caption="a dog"),
    ]
    dataset = TrainDataset(ImageSet(records), eval_transform(PRE), [0, 1], with_text=True)
    batch = collate_train([dataset[0], dataset[1]])
    assert batch["images"].shape == (1, 3, 24, 24)
    assert batch["labels"].tolist() == [0] and batch["indices"].tolist() == [0]
    assert batch["captions"] == ["a cat"]


def test_an_image_drawn_again_in_its_epoch_is_another_view_not_a_copy(image_folder: Path) -> None:
    """The m-per-class sampler fills a class of fewer than m images by drawing again: each
    further draw has its own key and augmentation, so a batch holds no pixel-identical pair
    (a zero-distance "positive"), while first draws keep the seeds they always had."""
    from lookalike.train.sampler import EpochSampler

    images = load_source(f"folder:{image_folder}")
    labels = [0] + [1] * (len(images) - 1)  # class 0 has one image; m = 3 draws it thrice
    sampler = EpochSampler(labels, "m_per_class", batch_size=6, m=3, seed=0)
    keys = list(sampler)
    lonely = [key for key in keys if key[1] == 0]
    assert lonely and lonely[0] == (0, 0) and lonely[1:] == [(0, 0, r) for r in range(1, len(lonely))]
    dataset = TrainDataset(images, train_transform(PRE, "strong"), labels)
    views = [dataset[key]["image"] for key in lonely]
    for first in range(len(views)):
        for second in range(first + 1, len(views)):
            assert not torch.equal(views[first], views[second])
    torch.testing.assert_close(dataset[(0, 0)]["image"], views[0])  # first draw: unchanged seed
