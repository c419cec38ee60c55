"""Training data: epoch-keyed sampling and augmentation, M-per-class batches, the val set."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lookalike.data.protocols import make_split
from lookalike.data.records import ImageRecord, ImageSet
from lookalike.data.sources import load_source
from lookalike.models.preprocessing import Preprocessing, eval_transform
from lookalike.train.config import DataSpec
from lookalike.train.data import (
    EpochSampler,
    RetrievalDataModule,
    TrainDataset,
    collate_train,
    train_transform,
    validation_set,
)

PRE = Preprocessing(input_size=24, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), crop_pct=1.0)


def write_images(root: Path, classes: int = 6, per_class: int = 4, size: int = 28) -> Path:
    rng = np.random.default_rng(1)
    for c in range(classes):
        (root / f"class{c}").mkdir(parents=True)
        colour = rng.integers(0, 255, 3)
        for i in range(per_class):
            pixels = np.clip(colour + rng.integers(-30, 30, (size, size, 3)), 0, 255)
            Image.fromarray(pixels.astype(np.uint8)).save(root / f"class{c}" / f"{i}.png")
    return root


@pytest.mark.parametrize("augment", ["weak", "strong"])
def test_train_transform_gives_normalised_tensor_of_model_size(augment: str) -> None:
    image = Image.fromarray(np.full((40, 30, 3), 255, dtype=np.uint8))
    out = train_transform(PRE, augment)(image)
    assert out.shape == (3, 24, 24) and out.dtype == torch.float32
    # white pixels, (1 - 0.5) / 0.25 = 2 wherever the crop keeps them (colour jitter aside)
    if augment == "weak":
        torch.testing.assert_close(out, torch.full_like(out, 2.0))


def test_train_transform_none_is_the_eval_transform(image_folder: Path) -> None:
    image = Image.open(next(image_folder.rglob("*.png"))).convert("RGB")
    torch.testing.assert_close(train_transform(PRE, "none")(image), eval_transform(PRE)(image))
    with pytest.raises(ValueError, match="weak, strong, none"):
        train_transform(PRE, "medium")


def test_random_sampler_order_depends_only_on_seed_and_epoch() -> None:
    sampler = EpochSampler([0] * 20, "random", batch_size=4, m=1, seed=3)
    first = list(sampler)
    torch.manual_seed(123)  # the global generator must not matter
    assert list(sampler) == first
    assert sorted(index for _, index in first) == list(range(20))
    assert {epoch for epoch, _ in first} == {0}
    sampler.set_epoch(1)
    second = list(sampler)
    assert [i for _, i in second] != [i for _, i in first]
    assert list(EpochSampler([0] * 20, "random", 4, 1, seed=3, epoch=1)) == second


def test_m_per_class_sampler_fills_batches_with_m_of_each_class() -> None:
    labels = [c for c in range(5) for _ in range(7)]
    sampler = EpochSampler(labels, "m_per_class", batch_size=6, m=2, seed=0)
    order = [index for _, index in sampler]
    assert len(order) == len(sampler) == 30
    for start in range(0, len(order), 6):
        counts = Counter(labels[i] for i in order[start : start + 6])
        assert sorted(counts.values()) == [2, 2, 2]
    np.random.seed(99)
    assert [index for _, index in sampler] == order
    with pytest.raises(ValueError, match="cannot fill a batch"):
        EpochSampler([0, 0, 1, 1], "m_per_class", batch_size=8, m=2, seed=0)


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


def test_validation_set_of_val_and_test_splits(tmp_path: Path) -> None:
    images = load_source(f"folder:{write_images(tmp_path / 'img', classes=6, per_class=3)}")
    split = make_split(images, "class_disjoint", train_fraction=0.67, val_fraction=0.5)
    val = validation_set(split, "val")
    assert val is not None and val.exclude_self
    assert val.images.ids == split.val.ids
    np.testing.assert_array_equal(val.query_rows, np.arange(len(split.val)))
    test = validation_set(split, "test")
    assert test is not None and [test.images[i].id for i in test.query_rows] == split.query.ids
    assert validation_set(split, "none") is None
    no_val = make_split(images, "class_disjoint", train_fraction=0.5)
    with pytest.raises(ValueError, match="val_fraction"):
        validation_set(no_val, "val")


def test_datamodule_batches_carry_class_codes(tmp_path: Path) -> None:
    images = load_source(f"folder:{write_images(tmp_path / 'img', classes=4, per_class=4)}")
    spec = DataSpec(batch_size=4, m=2, num_workers=0, sampler="m_per_class")
    module = RetrievalDataModule(images, None, spec, PRE, seed=0, with_labels=True)
    assert module.num_classes == 4
    batches = list(module.train_dataloader())
    assert len(batches) == 4
    for batch in batches:
        names = [images[i].label for i in batch["indices"].tolist()]
        assert [module.classes[c] for c in batch["labels"].tolist()] == names
        assert sorted(Counter(names).values()) == [2, 2]
    assert module.val_dataloader() == []


@pytest.mark.parametrize("kind", ["random", "m_per_class"])
def test_ddp_ranks_take_alternate_whole_batches_of_one_order(kind: str) -> None:
    labels = [c for c in range(4) for _ in range(9)]
    whole = [i for _, i in EpochSampler(labels, kind, 4, 2, seed=1, epoch=3)]
    shards = [
        [i for _, i in EpochSampler(labels, kind, 4, 2, seed=1, epoch=3, rank=r, world_size=2)]
        for r in range(2)
    ]
    assert len(shards[0]) == len(shards[1]) == 16
    batches = [whole[i : i + 4] for i in range(0, 32, 4)]
    assert [shards[r][i : i + 4] for i in range(0, 16, 4) for r in range(2)] == batches
