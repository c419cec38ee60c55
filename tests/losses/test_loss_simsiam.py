"""SimSiam against its paper's pseudo-code, its stop-gradient, and the collapse monitor."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lookalike.losses import create_loss
from lookalike.losses.simsiam import negative_cosine, output_std


def naive_negative_cosine(p: torch.Tensor, z: torch.Tensor) -> float:
    total = 0.0
    for a, b in zip(p.tolist(), z.tolist(), strict=True):
        dot = sum(x * y for x, y in zip(a, b, strict=True))
        total -= dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))
    return total / len(p)


def test_loss_matches_algorithm_1() -> None:
    loss = create_loss({"name": "simsiam", "projection_dim": 8, "predictor_dim": 3},
                       embedding_dim=5, num_classes=None)
    x1, x2 = torch.randn(6, 5), torch.randn(6, 5)
    parts = loss(x1, positive_embeddings=x2)
    with torch.no_grad():
        z1, z2 = loss.projector(x1), loss.projector(x2)
        p1, p2 = loss.predictor(z1), loss.predictor(z2)
    expected = naive_negative_cosine(p1, z2) / 2 + naive_negative_cosine(p2, z1) / 2
    assert parts["simsiam"].item() == pytest.approx(expected, rel=1e-5)
    assert parts["loss"] is parts["simsiam"]
    assert -1.0 <= parts["loss"].item() <= 1.0


def test_projector_and_predictor_shapes() -> None:
    loss = create_loss({"name": "simsiam", "projection_dim": 16, "hidden_dim": 32,
                        "predictor_dim": 4}, embedding_dim=10, num_classes=None)
    linears = [m for m in loss.projector if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(10, 32), (32, 32), (32, 16)]
    assert isinstance(loss.projector[-1], torch.nn.BatchNorm1d)  # no ReLU on the output
    linears = [m for m in loss.predictor if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(16, 4), (4, 16)]


def test_stop_gradient_really_stops() -> None:
    p = torch.randn(4, 6, requires_grad=True)
    z = torch.randn(4, 6, requires_grad=True)
    negative_cosine(p, z).backward()
    assert z.grad is None and p.grad is not None and p.grad.abs().sum() > 0


def test_gradient_equals_the_one_with_constant_targets() -> None:
    """dL/dx flows through p only: the same as treating both z as constants in D(p, z)."""
    torch.manual_seed(3)
    loss = create_loss({"name": "simsiam", "projection_dim": 8, "predictor_dim": 4},
                       embedding_dim=5, num_classes=None)
    x1 = torch.randn(6, 5, requires_grad=True)
    x2 = torch.randn(6, 5, requires_grad=True)
    loss(x1, positive_embeddings=x2)["loss"].backward()
    got = x1.grad.clone()

    y1 = x1.detach().clone().requires_grad_()
    y2 = x2.detach().clone().requires_grad_()
    z1, z2 = loss.projector(y1), loss.projector(y2)
    target1, target2 = z1.detach().clone(), z2.detach().clone()
    p1, p2 = loss.predictor(z1), loss.predictor(z2)
    manual = -(F.cosine_similarity(p1, target2).mean() + F.cosine_similarity(p2, target1).mean()) / 2
    manual.backward()
    torch.testing.assert_close(got, y1.grad)
    # without the stop-gradient the gradient differs: the test would catch a missing detach
    y1.grad = None
    z1, z2 = loss.projector(y1), loss.projector(y2)
    p1, p2 = loss.predictor(z1), loss.predictor(z2)
    (-(F.cosine_similarity(p1, z2).mean() + F.cosine_similarity(p2, z1).mean()) / 2).backward()
    assert not torch.allclose(got, y1.grad)


def test_collapse_monitor() -> None:
    healthy = output_std(torch.randn(4096, 64))
    assert healthy.item() == pytest.approx(1 / math.sqrt(64), rel=0.05)
    collapsed = output_std(torch.randn(1, 64).repeat(32, 1))
    assert collapsed.item() == pytest.approx(0.0, abs=1e-6)
    loss = create_loss({"name": "simsiam", "projection_dim": 8, "predictor_dim": 4},
                       embedding_dim=5, num_classes=None)
    parts = loss(torch.randn(16, 5), positive_embeddings=torch.randn(16, 5))
    ratio = parts["simsiam_output_std_ratio"] / parts["simsiam_output_std"]
    assert ratio.item() == pytest.approx(math.sqrt(8))


def test_simsiam_needs_two_views() -> None:
    loss = create_loss("simsiam", embedding_dim=5, num_classes=None)
    with pytest.raises(ValueError, match="loss 'simsiam' needs two views of each image"):
        loss(torch.randn(4, 5), torch.arange(4))
