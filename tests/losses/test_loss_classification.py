"""ArcFace, Proxy-Anchor, cross-entropy and BCE against closed forms written from the papers."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lookalike.losses import RetrievalLoss, create_loss

LABELS = torch.tensor([0, 0, 1, 1, 2, 2])
NUM_CLASSES = 4  # class 3 has no sample in the batch
DIM = 3


def make(spec: dict | str, num_classes: int | None = NUM_CLASSES) -> RetrievalLoss:
    return create_loss(spec, embedding_dim=DIM, num_classes=num_classes)


@pytest.fixture
def embeddings() -> torch.Tensor:
    return torch.randn(len(LABELS), DIM)


def fixed_weights(rows: int, cols: int) -> torch.Tensor:
    return torch.linspace(-1.0, 1.3, rows * cols).reshape(rows, cols).sin()


def test_arcface_matches_deng_2019(embeddings: torch.Tensor) -> None:
    margin_degrees, scale = 20.0, 8.0
    loss = make({"name": "arcface", "margin": margin_degrees, "scale": scale})
    centres = fixed_weights(DIM, NUM_CLASSES)  # (D, C), pml's layout
    loss.criterion.W.data.copy_(centres)
    embeddings = embeddings.clone()
    embeddings[-1] = -centres[:, LABELS[-1]]  # theta = pi: the monotonic fallback branch
    m = math.radians(margin_degrees)
    cosine = F.normalize(embeddings.double(), dim=1) @ F.normalize(centres.double(), dim=0)
    total = 0.0
    for i, y in enumerate(LABELS.tolist()):
        theta = math.acos(max(-1.0, min(1.0, float(cosine[i, y]))))
        target = math.cos(theta + m) if theta + m <= math.pi else math.cos(theta) - m * math.sin(m)
        logits = [scale * (target if c == y else float(cosine[i, c])) for c in range(NUM_CLASSES)]
        total += -logits[y] + math.log(sum(math.exp(v) for v in logits))
    parts = loss(embeddings, LABELS)
    assert set(parts) == {"loss", "arcface"}
    assert parts["loss"].item() == pytest.approx(total / len(LABELS), rel=1e-4)


def test_proxy_anchor_matches_kim_2020(embeddings: torch.Tensor) -> None:
    delta, alpha = 0.1, 4.0
    loss = make({"name": "proxy_anchor", "margin": delta, "alpha": alpha})
    proxies = fixed_weights(NUM_CLASSES, DIM)
    loss.criterion.proxies.data.copy_(proxies)
    sim = F.normalize(embeddings.double(), dim=1) @ F.normalize(proxies.double(), dim=1).T
    with_positives = sorted(set(LABELS.tolist()))
    positive_term, negative_term = 0.0, 0.0
    for p in range(NUM_CLASSES):
        members = [i for i in range(len(LABELS)) if LABELS[i] == p]
        others = [i for i in range(len(LABELS)) if LABELS[i] != p]
        if p in with_positives:
            pulls = sum(math.exp(-alpha * (sim[i, p] - delta)) for i in members)
            positive_term += math.log(1 + pulls)
        negative_term += math.log(1 + sum(math.exp(alpha * (sim[i, p] + delta)) for i in others))
    expected = positive_term / len(with_positives) + negative_term / NUM_CLASSES
    assert loss(embeddings, LABELS)["loss"].item() == pytest.approx(expected, rel=1e-5)


def naive_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, smoothing: float) -> float:
    total = 0.0
    classes = logits.shape[1]
    for row, y in zip(logits.tolist(), labels.tolist(), strict=True):
        log_z = math.log(sum(math.exp(v) for v in row))
        for c, value in enumerate(row):
            target = (1 - smoothing) * (c == y) + smoothing / classes
            total -= target * (value - log_z)
    return total / len(labels)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_cross_entropy_linear_head(embeddings: torch.Tensor, smoothing: float) -> None:
    loss = make({"name": "cross_entropy", "label_smoothing": smoothing})
    weight, bias = fixed_weights(NUM_CLASSES, DIM), torch.tensor([0.1, -0.2, 0.3, 0.0])
    loss.head.linear.weight.data.copy_(weight)
    loss.head.linear.bias.data.copy_(bias)
    logits = embeddings.double() @ weight.double().T + bias.double()
    expected = naive_cross_entropy(logits, LABELS, smoothing)
    assert loss(embeddings, LABELS)["cross_entropy"].item() == pytest.approx(expected, rel=1e-5)


def test_cross_entropy_cosine_head(embeddings: torch.Tensor) -> None:
    scale = 5.0
    loss = make({"name": "cross_entropy", "normalized": True, "scale": scale})
    weight = fixed_weights(NUM_CLASSES, DIM)
    loss.head.linear.weight.data.copy_(weight)
    assert loss.head.linear.bias is None
    logits = scale * F.normalize(embeddings.double(), dim=1) @ F.normalize(weight.double(), dim=1).T
    expected = naive_cross_entropy(logits, LABELS, 0.0)
    assert loss(embeddings, LABELS)["loss"].item() == pytest.approx(expected, rel=1e-5)


def naive_bce(logits: torch.Tensor, targets: torch.Tensor) -> float:
    total = 0.0
    for z, y in zip(logits.flatten().tolist(), targets.flatten().tolist(), strict=True):
        p = 1 / (1 + math.exp(-z))
        total -= y * math.log(p) + (1 - y) * math.log(1 - p)
    return total / logits.numel()


def test_bce_one_hot_encodes_integer_labels(embeddings: torch.Tensor) -> None:
    loss = create_loss("bce", embedding_dim=DIM, num_classes=NUM_CLASSES)
    weight = fixed_weights(NUM_CLASSES, DIM)
    loss.head.linear.weight.data.copy_(weight)
    loss.head.linear.bias.data.zero_()
    targets = torch.zeros(len(LABELS), NUM_CLASSES)
    for i, y in enumerate(LABELS.tolist()):
        targets[i, y] = 1.0
    expected = naive_bce(embeddings.double() @ weight.double().T, targets)
    assert loss(embeddings, LABELS)["bce"].item() == pytest.approx(expected, rel=1e-5)


def test_bce_takes_multi_hot_labels(embeddings: torch.Tensor) -> None:
    loss = create_loss("bce", embedding_dim=DIM, num_classes=NUM_CLASSES)
    weight = fixed_weights(NUM_CLASSES, DIM)
    loss.head.linear.weight.data.copy_(weight)
    loss.head.linear.bias.data.zero_()
    targets = torch.tensor(
        [[1, 1, 0, 0], [0, 0, 0, 1], [1, 0, 1, 1], [0, 0, 0, 0], [0, 1, 0, 0], [1, 1, 1, 1]]
    )
    expected = naive_bce(embeddings.double() @ weight.double().T, targets.double())
    assert loss(embeddings, targets)["loss"].item() == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match=r"multi-hot labels must be \(B, 4\)"):
        loss(embeddings, targets[:, :3])


def test_class_losses_classify_the_second_view_too(embeddings: torch.Tensor) -> None:
    loss = create_loss("cross_entropy", embedding_dim=DIM, num_classes=NUM_CLASSES)
    views = torch.randn_like(embeddings)
    stacked = loss(torch.cat([embeddings, views]), torch.cat([LABELS, LABELS]))["loss"]
    value = loss(embeddings, LABELS, positive_embeddings=views)["loss"]
    assert value.item() == pytest.approx(stacked.item())


@pytest.mark.parametrize("name", ["arcface", "proxy_anchor", "cross_entropy", "bce"])
def test_labels_out_of_range_are_a_clear_error(embeddings: torch.Tensor, name: str) -> None:
    loss = create_loss(name, embedding_dim=DIM, num_classes=NUM_CLASSES)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 4\), got 0\.\.7"):
        loss(embeddings, torch.tensor([0, 1, 2, 3, 7, 0]))


@pytest.mark.parametrize("name", ["arcface", "proxy_anchor", "cross_entropy", "bce"])
def test_class_losses_need_num_classes(name: str) -> None:
    with pytest.raises(ValueError, match="needs num_classes"):
        create_loss(name, embedding_dim=DIM, num_classes=None)


def test_bad_options_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="label_smoothing must lie in"):
        make({"name": "cross_entropy", "label_smoothing": 1.0})
    with pytest.raises(ValueError, match="scale must be > 0"):
        make({"name": "arcface", "scale": 0})
