"""The LightningModule: accumulation equals one big batch, val metrics equal evaluate_retrieval,
and the gradient-flow check stops a loop whose backbone gets no gradient."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from lookalike.data.dataset import ImageDataset, collate_skipping_broken
from lookalike.data.protocols import make_split
from lookalike.data.sources import load_source
from lookalike.losses import create_loss
from lookalike.metrics.retrieval import evaluate_retrieval
from lookalike.models import create_embedder
from lookalike.models.preprocessing import Preprocessing
from lookalike.train.dataset import collate_train
from lookalike.train.finetune import FinetuneSpec
from lookalike.train.inspect import GradientFlowError
from lookalike.train.module import RetrievalModule, reseed
from lookalike.train.optim import OptimSpec
from lookalike.train.validation import validation_set

SGD = OptimSpec(
    name="sgd", lr=0.5, head_lr=None, loss_lr=None, weight_decay=0.0, momentum=0.0,
    schedule="constant",
)


def tiny_module(
    finetune: FinetuneSpec | None = None, val_set=None, seed: int = 0
) -> RetrievalModule:
    """GroupNorm EfficientNet (no BatchNorm, no dropout) + linear head + cross-entropy."""
    torch.manual_seed(seed)
    embedder = create_embedder("timm:test_efficientnet_gn", weights=None, head="linear:16")
    embedder.preprocessing = Preprocessing(input_size=32, crop_pct=1.0)
    loss = create_loss("cross_entropy", embedding_dim=16, num_classes=4)
    return RetrievalModule(embedder, loss, finetune or FinetuneSpec("full"), SGD, val_set)


def tensor_loader(batch_size: int, count: int = 32) -> DataLoader:
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(count, 3, 32, 32, generator=generator)
    items = [{"image": images[i], "index": i, "label": i % 4} for i in range(count)]
    return DataLoader(items, batch_size=batch_size, shuffle=False, collate_fn=collate_train)


def quiet_trainer(**options) -> L.Trainer:
    defaults = dict(
        accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
        limit_val_batches=0,
    )
    return L.Trainer(**{**defaults, **options})


def parameters(module: RetrievalModule) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in module.named_parameters()}


def test_accumulating_4x8_equals_one_batch_of_32_and_a_plain_sgd_step() -> None:
    accumulated = tiny_module()
    initial = parameters(accumulated)
    quiet_trainer(max_steps=1, accumulate_grad_batches=4).fit(accumulated, tensor_loader(8))
    whole = tiny_module()
    quiet_trainer(max_steps=1).fit(whole, tensor_loader(32))

    reference = tiny_module()
    batch = next(iter(tensor_loader(32)))
    reference.loss(reference.embedder(batch["images"]), batch["labels"])["loss"].backward()
    with torch.no_grad():
        for parameter in reference.parameters():
            if parameter.grad is not None:
                parameter -= SGD.lr * parameter.grad

    after, big, plain = parameters(accumulated), parameters(whole), parameters(reference)
    moved = [name for name in after if not torch.allclose(after[name], initial[name])]
    assert len(moved) > 0.8 * len(after)
    for name in after:
        torch.testing.assert_close(after[name], big[name], atol=2e-6, rtol=1e-4)
        torch.testing.assert_close(after[name], plain[name], atol=2e-6, rtol=1e-4)


def write_val_images(root: Path) -> Path:
    rng = np.random.default_rng(2)
    for c in range(6):
        (root / f"k{c}").mkdir(parents=True)
        for i in range(4):
            pixels = rng.integers(0, 255, (36, 36, 3)).astype(np.uint8)
            Image.fromarray(pixels).save(root / f"k{c}" / f"{i}.png")
    (root / "k4" / "broken.png").write_bytes(b"\x89PNG broken")
    return root


def test_logged_val_metrics_equal_evaluate_retrieval_on_the_same_embeddings(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    images = load_source(f"folder:{write_val_images(tmp_path / 'img')}")
    split = make_split(images, "class_disjoint", train_fraction=0.99, val_fraction=0.6)
    val = validation_set(split, "val")
    module = tiny_module(val_set=val)
    loader = DataLoader(
        ImageDataset(val.images, module.embedder.eval_transform()), batch_size=5,
        collate_fn=collate_skipping_broken,
    )
    with caplog.at_level(logging.WARNING):
        quiet_trainer(limit_val_batches=1.0).validate(module, loader)
    logged = module.last_val_metrics

    module.embedder.eval()
    transform = module.embedder.eval_transform()
    kept = [r for r in val.images.records if r.path.name != "broken.png"]
    assert len(kept) == len(val.images) - 1
    with torch.no_grad():
        rows = [
            module.embedder(transform(Image.open(r.path).convert("RGB"))[None])[0] for r in kept
        ]
    embeddings = torch.stack(rows).numpy()
    labels = [r.label for r in kept]
    expected = evaluate_retrieval(
        embeddings, labels, embeddings, labels, self_index=np.arange(len(kept))
    )
    assert logged.keys() == expected.keys()
    for key, value in expected.items():
        assert logged[key] == pytest.approx(value, rel=1e-6, abs=1e-6), key
    assert "broken" in caplog.text


def detach_backbone(module: RetrievalModule) -> None:
    """The bug the check exists for: features computed without autograd."""
    backbone = module.embedder.backbone
    forward = backbone.forward

    def no_grad_forward(images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return forward(images)

    backbone.forward = no_grad_forward


def test_gradient_flow_check_fails_loudly_when_features_are_detached() -> None:
    module = tiny_module()
    detach_backbone(module)
    with pytest.raises(GradientFlowError, match="5 of 5 trainable blocks got no gradient"):
        quiet_trainer(max_epochs=1).fit(module, tensor_loader(8))
    assert module.trainer.global_step == 0


def test_gradient_flow_is_checked_again_when_blocks_unfreeze() -> None:
    spec = FinetuneSpec("freeze_then_unfreeze", last_n=2, unfreeze_epoch=1)
    module = tiny_module(spec)
    assert module.trainable_blocks == []
    detach_backbone(module)
    trainer = quiet_trainer(max_epochs=3)
    with pytest.raises(GradientFlowError, match="2 of 2 trainable blocks"):
        trainer.fit(module, tensor_loader(16))
    assert trainer.current_epoch == 1
    assert trainer.global_step == 2


def test_reseed_depends_on_seed_and_epoch_only() -> None:
    reseed(5, 2)
    first = torch.rand(3), np.random.rand(2)
    torch.rand(7)
    reseed(5, 2)
    second = torch.rand(3), np.random.rand(2)
    torch.testing.assert_close(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])
    reseed(5, 3)
    assert not torch.equal(torch.rand(3), first[0])
