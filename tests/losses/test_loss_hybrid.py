"""The weighted sum of parts, each reported under its own key."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lookalike.losses import create_loss

LABELS = torch.tensor([0, 0, 1, 1, 2, 2])


def test_hybrid_is_the_weighted_sum_of_its_parts() -> None:
    embeddings = F.normalize(torch.randn(6, 4), dim=1)
    spec = {
        "name": "hybrid",
        "parts": [
            {"name": "cross_entropy", "weight": 1.0},
            {"name": "contrastive", "weight": 0.5, "pos_margin": 0.9, "neg_margin": 0.2},
            {"name": "triplet", "key": "triplet_hard", "weight": 0.25, "miner": "batch_hard"},
        ],
    }
    hybrid = create_loss(spec, embedding_dim=4, num_classes=3)
    ce = create_loss("cross_entropy", embedding_dim=4, num_classes=3)
    ce.load_state_dict(hybrid.parts["cross_entropy"].state_dict())
    contrastive_spec = {"name": "contrastive", "pos_margin": 0.9, "neg_margin": 0.2}
    contrastive = create_loss(contrastive_spec, embedding_dim=4, num_classes=None)
    triplet_spec = {"name": "triplet", "miner": "batch_hard"}
    triplet = create_loss(triplet_spec, embedding_dim=4, num_classes=None)

    parts = hybrid(embeddings, LABELS)
    expected = {
        "cross_entropy": ce(embeddings, LABELS)["loss"].item(),
        "contrastive": contrastive(embeddings, LABELS)["loss"].item(),
        "triplet_hard": triplet(embeddings, LABELS)["loss"].item(),
    }
    assert set(parts) == {"loss", *expected}
    for key, value in expected.items():
        assert parts[key].item() == pytest.approx(value, rel=1e-6)
    total = (
        expected["cross_entropy"] + 0.5 * expected["contrastive"] + 0.25 * expected["triplet_hard"]
    )
    assert parts["loss"].item() == pytest.approx(total, rel=1e-6)
    assert {name for name, _ in hybrid.named_parameters()} == {
        "parts.cross_entropy.head.linear.weight",
        "parts.cross_entropy.head.linear.bias",
    }


def test_arcface_as_auxiliary_part_gets_gradient() -> None:
    embeddings = torch.randn(6, 4, requires_grad=True)
    spec = {"name": "hybrid", "parts": ["supcon", {"name": "arcface", "weight": 0.1}]}
    hybrid = create_loss(spec, embedding_dim=4, num_classes=3)
    hybrid(embeddings, LABELS)["loss"].backward()
    assert embeddings.grad is not None and embeddings.grad.abs().sum() > 0
    assert hybrid.parts["arcface"].criterion.W.grad is not None


def test_hybrid_requirements_are_its_parts() -> None:
    spec = {"name": "hybrid", "parts": ["cross_entropy", "clip"]}
    hybrid = create_loss(spec, embedding_dim=4, num_classes=3)
    assert hybrid.needs_labels and hybrid.needs_pairs
    with pytest.raises(ValueError, match="loss 'clip' needs a caption column or two views"):
        hybrid.validate(has_labels=True, has_text=False, has_views=False)
    with pytest.raises(ValueError, match="loss 'cross_entropy' needs class labels"):
        hybrid.validate(has_labels=False, has_text=True, has_views=False)
    hybrid.validate(has_labels=True, has_text=True, has_views=False)


@pytest.mark.parametrize(
    ("parts", "message"),
    [
        ([], "non-empty list of parts"),
        ("triplet", "non-empty list of parts"),
        (["triplet", "triplet"], "key 'triplet' is taken"),
        ([{"name": "triplet", "key": "loss"}], "key 'loss' is taken, reserved"),
        ([{"name": "triplet", "weight": -1}], "weight must be a finite number >= 0"),
        ([{"name": "hybrid", "parts": ["triplet"]}], "cannot itself be 'hybrid'"),
        ([{"name": "tripplet"}], "unknown loss 'tripplet'; valid names: arcface"),
        ([{"name": "triplet", "marign": 0.1}], "does not take marign"),
    ],
)
def test_bad_hybrid_specs_are_clear_errors(parts: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        create_loss({"name": "hybrid", "parts": parts}, embedding_dim=4, num_classes=3)
