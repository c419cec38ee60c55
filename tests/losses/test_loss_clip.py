"""CLIP's symmetric InfoNCE against a loop over rows and columns; the learned temperature."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lookalike.losses import RetrievalLoss, create_loss


def make(spec: dict | str) -> RetrievalLoss:
    return create_loss(spec, embedding_dim=4, num_classes=None)


def naive_clip(images: torch.Tensor, partners: torch.Tensor, scale: float) -> float:
    images = F.normalize(images.double(), dim=1)
    partners = F.normalize(partners.double(), dim=1)
    logits = (scale * images @ partners.T).tolist()
    batch = len(logits)
    image_to_text = sum(
        -logits[i][i] + math.log(sum(math.exp(v) for v in logits[i])) for i in range(batch)
    )
    text_to_image = sum(
        -logits[j][j] + math.log(sum(math.exp(logits[i][j]) for i in range(batch)))
        for j in range(batch)
    )
    return (image_to_text + text_to_image) / (2 * batch)


def test_clip_matches_symmetric_cross_entropy_and_starts_at_temperature_007() -> None:
    images, texts = torch.randn(5, 4), torch.randn(5, 4)
    loss = create_loss("clip", embedding_dim=4, num_classes=None)
    assert loss.scale.item() == pytest.approx(1 / 0.07, rel=1e-6)
    parts = loss(images, text_embeddings=texts)
    assert set(parts) == {"loss", "clip"}
    assert parts["loss"].item() == pytest.approx(naive_clip(images, texts, 1 / 0.07), rel=1e-5)


def test_clip_on_two_views_and_auto_prefers_text() -> None:
    images, views, texts = torch.randn(5, 4), torch.randn(5, 4), torch.randn(5, 4)
    loss = create_loss({"name": "clip", "init_temperature": 0.5}, embedding_dim=4, num_classes=None)
    on_views = loss(images, positive_embeddings=views)["loss"]
    assert on_views.item() == pytest.approx(naive_clip(images, views, 2.0), rel=1e-5)
    both = loss(images, text_embeddings=texts, positive_embeddings=views)["loss"]
    assert both.item() == pytest.approx(naive_clip(images, texts, 2.0), rel=1e-5)
    by_views = make({"name": "clip", "init_temperature": 0.5, "pairs": "views"})
    chosen = by_views(images, text_embeddings=texts, positive_embeddings=views)["loss"]
    assert chosen.item() == pytest.approx(naive_clip(images, views, 2.0), rel=1e-5)


def test_temperature_gets_gradient_below_the_cap_and_none_above() -> None:
    images, texts = torch.randn(6, 4), torch.randn(6, 4)
    loss = create_loss("clip", embedding_dim=4, num_classes=None)
    assert [name for name, _ in loss.named_parameters()] == ["logit_scale"]
    loss(images, text_embeddings=texts)["loss"].backward()
    assert loss.logit_scale.grad is not None and loss.logit_scale.grad.abs().item() > 0
    capped = make({"name": "clip", "init_temperature": 1 / 200})
    assert capped.scale.item() == pytest.approx(100.0)
    value = capped(images, text_embeddings=texts)["loss"]
    assert value.item() == pytest.approx(naive_clip(images, texts, 100.0), rel=1e-5)
    value.backward()
    assert capped.logit_scale.grad is not None and capped.logit_scale.grad.item() == 0.0


def test_fixed_temperature_is_not_trained() -> None:
    loss = make({"name": "clip", "learn_temperature": False})
    assert not any(p.requires_grad for p in loss.parameters())


def test_clip_pairs_errors() -> None:
    loss = create_loss("clip", embedding_dim=4, num_classes=None)
    with pytest.raises(ValueError, match="loss 'clip' needs a caption column or two views"):
        loss(torch.randn(3, 4), torch.tensor([0, 1, 2]))
    by_text = create_loss({"name": "clip", "pairs": "text"}, embedding_dim=4, num_classes=None)
    with pytest.raises(ValueError, match="pairs='text' needs a caption column"):
        by_text.validate(has_labels=True, has_text=False, has_views=True)
    with pytest.raises(ValueError, match="unknown pairs 'captions'; valid: auto, text, views"):
        create_loss({"name": "clip", "pairs": "captions"}, embedding_dim=4, num_classes=None)
