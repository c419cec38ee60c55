"""Training data: the val set of a split, and the data module's class-coded batches."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lookalike.data.protocols import make_split
from lookalike.data.sources import load_source
from lookalike.models.preprocessing import Preprocessing
from lookalike.train.config import DataSpec
from lookalike.train.data import RetrievalDataModule
from lookalike.train.validation import validation_set

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


@pytest.mark.filterwarnings("ignore:This DataLoader will create")
@pytest.mark.parametrize(
    ("device", "processes", "cores", "expected"),
    [
        ("cpu", 1, 16, 2),  # one worker per 8 cores: the model keeps the rest
        ("cpu", 2, 16, 1),  # two DDP processes share the cores
        ("cpu", 1, 4, 0),  # too few cores to spare one: load in the main process
        ("cuda", 1, 16, 15),  # the GPU computes: every core but one feeds it
        ("cuda", 4, 16, 3),  # four GPUs' processes: 4 cores each, one kept
    ],
)
def test_auto_workers_share_the_cores_among_the_processes_on_their_device(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, device: str, processes: int, cores: int,
    expected: int,
) -> None:
    import torch

    from lookalike.train import data as data_module

    images = load_source(f"folder:{write_images(tmp_path / 'img', classes=4, per_class=4)}")
    module = RetrievalDataModule(images, None, DataSpec(batch_size=4, m=2), PRE, seed=0,
                                 with_labels=True)  # fmt: skip
    assert module.spec.num_workers == "auto"  # the default
    monkeypatch.setattr(data_module, "available_cores", lambda: cores)
    trainer = type("Trainer", (), {"num_devices": processes,
                                   "strategy": type("S", (), {"root_device": torch.device(device)})(),
                                   "current_epoch": 0, "global_rank": 0, "world_size": processes})()  # fmt: skip
    module.trainer = trainer
    assert module._workers() == expected
    if processes == 1:  # (4 classes cannot fill the global batch of several processes)
        assert module.train_dataloader().num_workers == expected
    explicit = RetrievalDataModule(images, None, DataSpec(batch_size=4, m=2, num_workers=3), PRE,
                                   seed=0, with_labels=True)  # fmt: skip
    assert explicit._workers() == 3


def test_a_bad_worker_count_is_refused_by_name() -> None:
    from lookalike.config import resolve_config
    from lookalike.train.config import TrainConfig, check_config

    config = resolve_config(TrainConfig, overrides=["data.source=x", "data.num_workers=many"])
    with pytest.raises(ValueError, match="data.num_workers"):
        check_config(config)
