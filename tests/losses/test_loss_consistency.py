"""Consistency losses against naive per-element loops, the ramp-up's closed form, stop-gradient."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lookalike.losses import ViewPairs, create_loss
from lookalike.losses.consistency import rampup_factor

N, D, C = 6, 5, 4


def hybrid(classifier: str, consistency: dict) -> torch.nn.Module:
    return create_loss(
        {"name": "hybrid", "parts": [classifier, consistency]}, embedding_dim=D, num_classes=C
    )


def pairs() -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(1)
    return torch.randn(N, D).requires_grad_(), torch.randn(N, D).requires_grad_()


def naive_probabilities(logits: torch.Tensor, sigmoid: bool) -> list[list[float]]:
    rows = []
    for row in logits.tolist():
        if sigmoid:
            rows.append([1 / (1 + math.exp(-value)) for value in row])
        else:
            total = sum(math.exp(value) for value in row)
            rows.append([math.exp(value) / total for value in row])
    return rows


@pytest.mark.parametrize("classifier", ["bce", "cross_entropy", "arcface"])
def test_mse_on_probabilities_matches_a_loop(classifier: str) -> None:
    loss = hybrid(classifier, {"name": "consistency_mse"})
    weak, strong = pairs()
    head = loss.parts[classifier]
    sigmoid = classifier == "bce"
    with torch.no_grad():
        p_weak = naive_probabilities(head.class_logits(weak), sigmoid)
        p_strong = naive_probabilities(head.class_logits(strong), sigmoid)
    expected = sum(
        (p_strong[n][c] - p_weak[n][c]) ** 2 for n in range(N) for c in range(C)
    ) / (N * C)
    parts = loss(weak, torch.arange(N) % C, view_pairs=ViewPairs(weak, strong))
    assert parts["consistency_mse"].item() == pytest.approx(expected, rel=1e-5)


def test_kl_softmax_matches_a_loop() -> None:
    loss = hybrid("cross_entropy", {"name": "consistency_kl"})
    weak, strong = pairs()
    head = loss.parts["cross_entropy"]
    with torch.no_grad():
        p = naive_probabilities(head.class_logits(weak), False)
        q = naive_probabilities(head.class_logits(strong), False)
    expected = sum(
        p[n][c] * math.log(p[n][c] / q[n][c]) for n in range(N) for c in range(C)
    ) / N
    value = loss(weak, torch.arange(N) % C, view_pairs=ViewPairs(weak, strong))["consistency_kl"]
    assert value.item() == pytest.approx(expected, rel=1e-5)


def test_kl_sigmoid_is_a_sum_of_bernoulli_kls() -> None:
    loss = hybrid("bce", {"name": "consistency_kl"})
    weak, strong = pairs()
    head = loss.parts["bce"]
    with torch.no_grad():
        p = naive_probabilities(head.class_logits(weak), True)
        q = naive_probabilities(head.class_logits(strong), True)
    expected = sum(
        p[n][c] * math.log(p[n][c] / q[n][c])
        + (1 - p[n][c]) * math.log((1 - p[n][c]) / (1 - q[n][c]))
        for n in range(N)
        for c in range(C)
    ) / N
    value = loss(weak, torch.arange(N) % C, view_pairs=ViewPairs(weak, strong))["consistency_kl"]
    assert value.item() == pytest.approx(expected, rel=1e-5)


def test_cosine_on_embeddings_matches_a_loop() -> None:
    loss = create_loss("consistency_cosine", embedding_dim=D, num_classes=None)
    weak, strong = pairs()
    expected = 0.0
    for a, b in zip(weak.tolist(), strong.tolist(), strict=True):
        dot = sum(x * y for x, y in zip(a, b, strict=True))
        norms = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
        expected += 1 - dot / norms
    parts = loss(weak, view_pairs=ViewPairs(weak, strong))
    assert parts["consistency_cosine"].item() == pytest.approx(expected / N, rel=1e-5)


def test_identical_views_cost_nothing() -> None:
    loss = hybrid("bce", {"name": "consistency_kl"})
    weak = torch.randn(N, D)
    parts = loss(weak, torch.arange(N) % C, view_pairs=ViewPairs(weak, weak.clone()))
    assert abs(parts["consistency_kl"].item()) < 1e-6


def test_rampup_closed_form_and_weighting() -> None:
    assert rampup_factor(0, 0) == 1.0 and rampup_factor(5, 10) == pytest.approx(math.exp(-1.25))
    assert rampup_factor(0, 10) == pytest.approx(math.exp(-5)) and rampup_factor(99, 10) == 1.0
    loss = hybrid("bce", {"name": "consistency_mse", "weight": 100.0, "rampup_steps": 10})
    weak, strong = pairs()
    labels = torch.arange(N) % C
    parts = loss(weak, labels, view_pairs=ViewPairs(weak, strong), step=5)
    ramp = math.exp(-1.25)
    assert parts["consistency_mse_rampup"].item() == pytest.approx(ramp)
    expected = parts["bce"] + 100.0 * ramp * parts["consistency_mse"]
    assert parts["loss"].item() == pytest.approx(expected.item(), rel=1e-6)


def test_the_weak_view_is_a_stopped_target() -> None:
    loss = hybrid("bce", {"name": "consistency_mse"})
    weak, strong = pairs()
    loss(weak.detach(), torch.arange(N) % C,
         view_pairs=ViewPairs(weak, strong))["consistency_mse"].backward()
    assert weak.grad is None and strong.grad is not None and strong.grad.abs().sum() > 0
    both = hybrid("bce", {"name": "consistency_mse", "detach_target": False})
    weak, strong = pairs()
    both(weak.detach(), torch.arange(N) % C,
         view_pairs=ViewPairs(weak, strong))["consistency_mse"].backward()
    assert weak.grad is not None and weak.grad.abs().sum() > 0


def test_probability_consistency_needs_a_classifier_part() -> None:
    with pytest.raises(ValueError, match="after one classifier part"):
        create_loss("consistency_mse", embedding_dim=D, num_classes=C)
    with pytest.raises(ValueError, match="classifier 'ce' is not an earlier part"):
        hybrid("bce", {"name": "consistency_mse", "classifier": "ce"})
    spec = {"name": "hybrid", "parts": ["arcface", "bce", {"name": "consistency_mse"}]}
    with pytest.raises(ValueError, match="earlier classifier parts: arcface, bce"):
        create_loss(spec, embedding_dim=D, num_classes=C)
    spec["parts"][2] = {"name": "consistency_mse", "classifier": "bce"}
    assert create_loss(spec, embedding_dim=D, num_classes=C).parts["consistency_mse"].multilabel


def test_consistency_without_view_pairs_is_refused() -> None:
    loss = hybrid("bce", {"name": "consistency_mse"})
    with pytest.raises(ValueError, match="needs weak/strong view pairs: set data.unlabelled"):
        loss(torch.randn(N, D), torch.arange(N) % C)
    assert loss.needs_view_pairs


def test_view_pairs_must_match() -> None:
    with pytest.raises(ValueError, match="view pairs must be two"):
        ViewPairs(torch.randn(3, 4), torch.randn(2, 4))


def test_hybrid_exposes_the_answering_classifier() -> None:
    spec = {"name": "hybrid", "classifier": "bce", "parts": ["arcface", "bce"]}
    loss = create_loss(spec, embedding_dim=D, num_classes=C)
    assert loss.answering_classifier() is loss.parts["bce"]
    spec = {"name": "hybrid", "parts": ["ntxent", "arcface", "bce"]}
    assert create_loss(spec, embedding_dim=D, num_classes=C).answering_classifier().name == "arcface"
    assert create_loss("ntxent", embedding_dim=D, num_classes=None).answering_classifier() is None
    with pytest.raises(ValueError, match="not a part with class weights; those are: arcface"):
        create_loss({"name": "hybrid", "classifier": "ntxent", "parts": ["ntxent", "arcface"]},
                    embedding_dim=D, num_classes=C)
    probabilities = F.softmax(loss.parts["arcface"].class_logits(torch.randn(2, D)), dim=1)
    assert torch.allclose(probabilities.sum(dim=1), torch.ones(2))
