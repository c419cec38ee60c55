"""Semi- and self-supervised training: unlabelled sources, the combined loader, consistency and
SimSiam runs end to end, and the classifier kept with the exported model."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from lookalike.config import resolve_config
from lookalike.losses import create_loss
from lookalike.models import load_embedder
from lookalike.models.classifier import load_model_classifier, model_classifier_folder
from lookalike.models.preprocessing import Preprocessing
from lookalike.models.training_checkpoint import read_checkpoint
from lookalike.train.config import TrainConfig
from lookalike.train.data import RetrievalDataModule, load_training_sets
from lookalike.train.run import run_training
from lookalike.train.unlabelled import UnlabelledSampler
from tiny_training import tiny_config, write_images

CONSISTENCY_LOSS = (
    "loss.parts=[{name: arcface, scale: 30.0, margin: 8.6}, {name: bce}, "
    "{name: consistency_mse, classifier: bce, weight: 100, rampup_steps: 4}]"
)


def data_module(config: TrainConfig) -> RetrievalDataModule:
    train, val, unlabelled = load_training_sets(config.data)
    return RetrievalDataModule(train, val, config.data, Preprocessing(input_size=32), seed=0,
                               with_labels=True, unlabelled=unlabelled)


@pytest.mark.parametrize("ratio", [1.0, 0.5, 2.0])
def test_combined_loader_draws_both_streams_in_the_ratio(tmp_path: Path, ratio: float) -> None:
    images = write_images(tmp_path / "img")
    config = tiny_config(images, tmp_path / "run", f"data.unlabelled.ratio={ratio}",
                         f"data.unlabelled.sources=[split:test, 'images:{images}']")
    module = data_module(config)
    labelled_paths = {str(r.path) for r in module.train_set.records}
    labelled_paths |= {str(r.path) for r in module.val_set.images.records}
    assert all(str(r.path) not in labelled_paths for r in module.unlabelled.records)
    assert all(r.label is None for r in module.unlabelled.records)
    # the 8 classes x 6 images: 2 test classes (12 images) are the only unlabelled ones
    assert len(module.unlabelled) == 12
    batches = list(module.train_dataloader())
    assert len(batches) == 24 // 8  # every labelled batch, each with an unlabelled one
    for batch, _, _ in batches:
        labelled, unlabelled = batch["labelled"], batch["unlabelled"]
        assert labelled["images"].shape[0] == 8 and "labels" in labelled
        assert unlabelled["images"].shape[0] == round(ratio * 8)
        assert "labels" not in unlabelled
        assert unlabelled["views"].shape == unlabelled["images"].shape
        assert labelled["views"].shape == labelled["images"].shape
        assert not torch.equal(labelled["views"], labelled["images"])  # weak vs strong views


def test_unlabelled_sampler_cycles_in_a_seeded_order() -> None:
    sampler = UnlabelledSampler(count=5, batch_size=4, batches=3, seed=1, epoch=2)
    keys = list(sampler)
    assert len(keys) == len(sampler) == 12 and {epoch for epoch, _ in keys} == {2}
    indices = [index for _, index, *_ in keys]
    assert sorted(indices[:5]) == list(range(5)) and sorted(indices[5:10]) == list(range(5))
    assert indices == [i for _, i in UnlabelledSampler(5, 4, 3, seed=1, epoch=2)]
    sampler.set_epoch(3)
    assert [i for _, i in sampler] != indices
    shards = [list(UnlabelledSampler(5, 2, 2, 1, 0, rank, 2)) for rank in (0, 1)]
    together = list(UnlabelledSampler(5, 2, 4, 1, 0, 0, 1))
    assert shards[0] == together[0:2] + together[4:6]
    assert shards[1] == together[2:4] + together[6:8]


def test_unlabelled_source_of_only_labelled_images_is_refused(tmp_path: Path) -> None:
    images = write_images(tmp_path / "img")
    config = tiny_config(images, tmp_path / "run", f"data.unlabelled.sources=['images:{images}/c0']")
    with pytest.raises(ValueError, match="hold no image that is not labelled for training"):
        load_training_sets(config.data)


@pytest.mark.slow
def test_consistency_training_keeps_its_classifier_with_the_model(tmp_path: Path) -> None:
    images = write_images(tmp_path / "img")
    config = tiny_config(images, tmp_path / "run", "trainer.max_epochs=2", "loss.name=hybrid",
                         CONSISTENCY_LOSS, "loss.classifier=bce",
                         "data.unlabelled.sources=[split:test]",
                         "data.view_augment=trivial_augment")
    outcome = run_training(config)
    with open(outcome.output / "history.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    for column in ("train/arcface", "train/bce", "train/consistency_mse",
                   "train/consistency_mse_rampup"):
        assert all(float(row[column]) >= 0 for row in rows), column
    assert float(rows[0]["train/consistency_mse_rampup"]) < float(rows[1]["train/consistency_mse_rampup"])

    # the exported model answers with the head the loss trained: identical probabilities
    embedder = load_embedder(outcome.model_dir)
    classifier = load_model_classifier(outcome.model_dir, embedder.fingerprint())
    assert model_classifier_folder(outcome.model_dir).is_dir()
    loss = create_loss(config.loss, embedding_dim=embedder.embedding_dim, num_classes=4)
    state = read_checkpoint(outcome.best_checkpoint)["state_dict"]
    loss.load_state_dict({k.removeprefix("loss."): v for k, v in state.items()
                          if k.startswith("loss.")})
    loss.eval()
    assert classifier.classes == ["c0", "c1", "c2", "c3"] and classifier.activation == "sigmoid"
    with torch.no_grad():
        embeddings = embedder(torch.randn(5, 3, 32, 32))
        expected = loss.answering_classifier().class_probabilities(embeddings)
        assert torch.equal(classifier.probabilities(embeddings), expected)


@pytest.mark.slow
def test_simsiam_trains_from_an_unlabelled_folder_and_exports(tmp_path: Path) -> None:
    images = write_images(tmp_path / "img")
    config = resolve_config(TrainConfig, overrides=[
        f"data.source=images:{images}", "data.protocol=train_only", "data.val_split=none",
        "data.sampler=random", "data.batch_size=8", "data.num_workers=0", "data.image_size=32",
        "model.backbone=timm:test_efficientnet_gn", "model.weights=none", "model.head=linear:16",
        "loss.name=simsiam", "loss.projection_dim=32", "loss.predictor_dim=8",
        "trainer.max_epochs=2", f"output={tmp_path / 'run'}",
    ])
    outcome = run_training(config)
    with open(outcome.output / "history.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2
    for row in rows:
        std = float(row["train/simsiam_output_std"])
        assert 0 < std and float(row["train/simsiam_output_std_ratio"]) == pytest.approx(
            std * 32**0.5, rel=1e-4)
    embedder = load_embedder(outcome.model_dir)
    assert embedder.embedding_dim == 16
    assert not model_classifier_folder(outcome.model_dir).exists()
