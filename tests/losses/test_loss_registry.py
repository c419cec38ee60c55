"""Contract over every registered loss; create_loss, miners, distances and validation errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from lookalike.losses import LOSSES, MINERS, RetrievalLoss, ViewPairs, create_loss

LABELS = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
SPECS = {name: name for name in LOSSES.names()} | {
    "hybrid": {"name": "hybrid", "parts": ["cross_entropy", {"name": "ntxent", "weight": 0.5}]},
    # class-probability consistency reads a classifier part of its hybrid
    "consistency_mse": {"name": "hybrid", "parts": ["bce", "consistency_mse"]},
    "consistency_kl": {"name": "hybrid", "parts": ["cross_entropy", "consistency_kl"]},
}


@pytest.mark.parametrize("name", LOSSES.names())
def test_every_loss_returns_named_parts_with_gradients(name: str) -> None:
    embeddings = F.normalize(torch.randn(8, 6), dim=1).requires_grad_()
    views = F.normalize(torch.randn(8, 6), dim=1).requires_grad_()
    texts = F.normalize(torch.randn(8, 6), dim=1).requires_grad_()
    loss = create_loss(SPECS[name], embedding_dim=6, num_classes=4)
    assert isinstance(loss, RetrievalLoss) and loss.name in (name, "hybrid")
    # the strong side of the view pairs is the embeddings, so consistency reaches them
    pairs = ViewPairs(weak=views, strong=embeddings)
    parts = loss(embeddings, LABELS, text_embeddings=texts, positive_embeddings=views,
                 view_pairs=pairs, step=3)
    assert "loss" in parts and (name in parts or name == "hybrid")
    assert all(value.ndim == 0 and torch.isfinite(value) for value in parts.values())
    parts["loss"].backward()
    assert embeddings.grad is not None and embeddings.grad.abs().sum() > 0
    for param_name, param in loss.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, param_name


def test_half_precision_embeddings_leave_weights_in_float32() -> None:
    loss = create_loss("arcface", embedding_dim=6, num_classes=4)
    value = loss(torch.randn(8, 6).half(), LABELS)["loss"]
    assert value.dtype == torch.float32 and loss.criterion.W.dtype == torch.float32


def test_unknown_loss_lists_valid_names() -> None:
    message = "unknown loss 'arcfase'; valid names: arcface, bce, clip, consistency_cosine"
    with pytest.raises(ValueError, match=message):
        create_loss("arcfase", embedding_dim=4, num_classes=2)


def test_unknown_option_lists_the_entry_options() -> None:
    message = "loss 'triplet' does not take marign; its options: distance, margin, miner"
    with pytest.raises(ValueError, match=message):
        create_loss({"name": "triplet", "marign": 0.1}, embedding_dim=4, num_classes=None)
    with pytest.raises(ValueError, match="does not take num_classes"):
        create_loss({"name": "arcface", "num_classes": 3}, embedding_dim=4, num_classes=3)


@pytest.mark.parametrize("spec", [{"margin": 0.1}, 3, None])
def test_malformed_spec_is_a_clear_error(spec: object) -> None:
    with pytest.raises(ValueError, match="a loss spec is a name or a mapping with a 'name' key"):
        create_loss(spec, embedding_dim=4, num_classes=None)  # type: ignore[arg-type]


def test_omegaconf_specs_are_accepted() -> None:
    part = {"name": "triplet", "miner": {"name": "semihard"}}
    spec = OmegaConf.create({"name": "hybrid", "parts": [part]})
    loss = create_loss(spec, embedding_dim=4, num_classes=None)
    assert list(loss.parts) == ["triplet"]


def test_unknown_distance_and_miner_list_valid_names() -> None:
    with pytest.raises(ValueError, match="unknown distance 'dot'; valid names: cosine, l2"):
        create_loss({"name": "triplet", "distance": "dot"}, embedding_dim=4, num_classes=None)
    with pytest.raises(ValueError, match="unknown miner 'random'; valid names: all, batch_hard"):
        create_loss({"name": "triplet", "miner": "random"}, embedding_dim=4, num_classes=None)
    miner = {"name": "batch_hard", "epsilon": 1}
    with pytest.raises(ValueError, match=r"'batch_hard' does not take epsilon; its options: \("):
        create_loss({"name": "triplet", "miner": miner}, embedding_dim=4, num_classes=None)
    with pytest.raises(ValueError, match="'cosine' always L2-normalises"):
        raw_cosine = {"name": "supcon", "normalize_embeddings": False}
        create_loss(raw_cosine, embedding_dim=4, num_classes=None)
    assert MINERS.names() == ["all", "batch_hard", "hard", "multi_similarity", "semihard"]


def test_l2_on_raw_embeddings_uses_their_norms() -> None:
    embeddings = torch.randn(8, 4) * 3
    loss = create_loss(
        {"name": "contrastive", "distance": "l2", "normalize_embeddings": False, "neg_margin": 1e2},
        embedding_dim=4,
        num_classes=None,
    )
    distances = torch.cdist(embeddings.double(), embeddings.double())
    same = LABELS[:, None] == LABELS[None, :]
    positives = distances[same & ~torch.eye(8, dtype=torch.bool)]
    expected = positives.mean() + (100.0 - distances[~same]).mean()
    assert loss(embeddings, LABELS)["loss"].item() == pytest.approx(expected.item(), rel=1e-5)


@pytest.mark.parametrize(
    ("name", "fields", "message"),
    [
        ("arcface", (False, True, True), "'arcface' needs class labels"),
        ("clip", (True, False, False), "'clip' needs a caption column or two"),
        ("ntxent", (False, True, False), "'ntxent' needs class labels or two"),
    ],
)
def test_validate_names_what_the_data_lacks(
    name: str, fields: tuple[bool, bool, bool], message: str
) -> None:
    loss = create_loss(name, embedding_dim=4, num_classes=3)
    has_labels, has_text, has_views = fields
    with pytest.raises(ValueError, match=message):
        loss.validate(has_labels=has_labels, has_text=has_text, has_views=has_views)


def test_requirement_flags() -> None:
    flags = {
        name: (loss.needs_labels, loss.needs_pairs, loss.needs_labels_or_views)
        for name in ("arcface", "cross_entropy", "clip", "ntxent", "triplet")
        for loss in [create_loss(name, embedding_dim=4, num_classes=3)]
    }
    assert flags == {
        "arcface": (True, False, False),
        "cross_entropy": (True, False, False),
        "clip": (False, True, False),
        "ntxent": (False, False, True),
        "triplet": (False, False, True),
    }


def test_bad_batch_shapes_are_clear_errors() -> None:
    loss = create_loss("triplet", embedding_dim=4, num_classes=None)
    with pytest.raises(ValueError, match=r"embeddings must be \(B, D\), got shape \(8,\)"):
        loss(torch.randn(8), LABELS)
    with pytest.raises(ValueError, match=r"labels must be \(B,\) or \(B, C\) with B=8, got shape"):
        loss(torch.randn(8, 4), LABELS[:7])
    with pytest.raises(ValueError, match=r"positive_embeddings must have the embeddings' shape"):
        loss(torch.randn(8, 4), positive_embeddings=torch.randn(8, 5))
    with pytest.raises(ValueError, match="'triplet' needs class labels or two views"):
        loss(torch.randn(8, 4))
