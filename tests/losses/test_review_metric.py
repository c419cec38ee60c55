"""Review: value AND gradient of the pml-backed metric losses and ArcFace against references.

Two references each: pytorch-metric-learning's own classes built with the same settings (so a
default, a margin or a distance lost on the way into pml shows), and naive float64 loops of the
papers' formulas differentiated by autograd (so pml itself is checked). The labels hold repeated
and single-sample classes.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from pytorch_metric_learning import distances as pml_distances
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import miners as pml_miners

from lookalike.losses import create_loss

LABELS = torch.tensor([0, 0, 0, 1, 1, 2, 3, 3, 4])  # classes 2 and 4 have one sample
DIM = 5
Matrix = Callable[[int, int], torch.Tensor]


def rows() -> torch.Tensor:
    torch.manual_seed(7)
    return torch.randn(len(LABELS), DIM)


def ours(
    spec: dict,
    x: torch.Tensor,
    labels: torch.Tensor | None = LABELS,
    views: torch.Tensor | None = None,
) -> tuple[float, torch.Tensor]:
    """Our loss's value and its gradient with respect to ``x``."""
    x = x.clone().requires_grad_()
    loss = create_loss(spec, embedding_dim=DIM, num_classes=None)
    value = loss(x, labels, positive_embeddings=views)["loss"]
    (grad,) = torch.autograd.grad(value, x)
    return value.item(), grad


def naive(
    formula: Callable[[Matrix, torch.Tensor], torch.Tensor], x: torch.Tensor, distance: str
) -> tuple[float, torch.Tensor]:
    """A float64 formula over pairwise similarities (cosine) or distances (l2, normalised rows)."""
    x = x.double().clone().requires_grad_()
    unit = F.normalize(x, dim=1)

    def pair(a: int, b: int) -> torch.Tensor:
        if distance == "cosine":
            return unit[a] @ unit[b]
        return (unit[a] - unit[b]).norm()

    value = formula(pair, LABELS)
    (grad,) = torch.autograd.grad(value, x)
    return value.item(), grad.float()


def avg_nonzero(terms: list[torch.Tensor]) -> torch.Tensor:
    kept = [t for t in terms if t.item() > 0]
    return torch.stack(kept).mean() if kept else torch.zeros((), dtype=torch.float64)


def positives(i: int, labels: torch.Tensor) -> list[int]:
    return [k for k in range(len(labels)) if k != i and labels[k] == labels[i]]


def negatives(i: int, labels: torch.Tensor) -> list[int]:
    return [k for k in range(len(labels)) if labels[k] != labels[i]]


def assert_same(got: tuple[float, torch.Tensor], want: tuple[float, torch.Tensor]) -> None:
    assert got[0] == pytest.approx(want[0], rel=1e-5, abs=1e-6)
    torch.testing.assert_close(got[1], want[1], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("distance", ["cosine", "l2"])
def test_triplet_gradient_matches_facenet(distance: str) -> None:
    margin = 0.3
    sign = -1.0 if distance == "cosine" else 1.0  # similarities flip the sense

    def formula(d: Matrix, labels: torch.Tensor) -> torch.Tensor:
        return avg_nonzero(
            [
                torch.relu(sign * (d(a, p) - d(a, n)) + margin)
                for a in range(len(labels))
                for p in positives(a, labels)
                for n in negatives(a, labels)
            ]
        )

    spec = {"name": "triplet", "margin": margin, "distance": distance}
    assert_same(ours(spec, rows()), naive(formula, rows(), distance))


@pytest.mark.parametrize("distance", ["cosine", "l2"])
def test_contrastive_gradient_matches_hadsell(distance: str) -> None:
    pos_margin, neg_margin = (0.9, 0.1) if distance == "cosine" else (0.2, 1.1)
    sign = -1.0 if distance == "cosine" else 1.0

    def formula(d: Matrix, labels: torch.Tensor) -> torch.Tensor:
        n = len(labels)
        pos = [
            torch.relu(sign * (d(a, p) - pos_margin))
            for a in range(n)
            for p in positives(a, labels)
        ]
        neg = [
            torch.relu(sign * (neg_margin - d(a, q)))
            for a in range(n)
            for q in negatives(a, labels)
        ]
        return avg_nonzero(pos) + avg_nonzero(neg)

    spec = {
        "name": "contrastive",
        "distance": distance,
        "pos_margin": pos_margin,
        "neg_margin": neg_margin,
    }
    assert_same(ours(spec, rows()), naive(formula, rows(), distance))


def test_multi_similarity_gradient_matches_wang_2019() -> None:
    alpha, beta, base = 2.0, 10.0, 0.3

    def formula(s: Matrix, labels: torch.Tensor) -> torch.Tensor:
        per_anchor = []
        for i in range(len(labels)):
            pull = sum(
                (torch.exp(-alpha * (s(i, k) - base)) for k in positives(i, labels)),
                torch.zeros((), dtype=torch.float64),
            )
            push = sum(torch.exp(beta * (s(i, k) - base)) for k in negatives(i, labels))
            per_anchor.append(torch.log1p(pull) / alpha + torch.log1p(push) / beta)
        return torch.stack(per_anchor).mean()

    spec = {"name": "multi_similarity", "alpha": alpha, "beta": beta, "base": base}
    assert_same(ours(spec, rows()), naive(formula, rows(), "cosine"))


@pytest.mark.parametrize("distance", ["cosine", "l2"])
def test_ntxent_gradient_matches_the_pair_formula(distance: str) -> None:
    t = 0.2
    sign = 1.0 if distance == "cosine" else -1.0  # negated distances serve as similarities

    def formula(s: Matrix, labels: torch.Tensor) -> torch.Tensor:
        terms = []
        for a in range(len(labels)):
            rest = sum(torch.exp(sign * s(a, n) / t) for n in negatives(a, labels))
            for p in positives(a, labels):
                pos = torch.exp(sign * s(a, p) / t)
                terms.append(-torch.log(pos / (pos + rest)))
        return torch.stack(terms).mean()

    spec = {"name": "ntxent", "temperature": t, "distance": distance}
    assert_same(ours(spec, rows()), naive(formula, rows(), distance))


@pytest.mark.parametrize("distance", ["cosine", "l2"])
def test_supcon_gradient_matches_khosla_2020(distance: str) -> None:
    t = 0.1
    sign = 1.0 if distance == "cosine" else -1.0

    def formula(s: Matrix, labels: torch.Tensor) -> torch.Tensor:
        per_anchor = []
        for i in range(len(labels)):
            if not positives(i, labels):
                continue  # no positive: no term (pml's AvgNonZero drops the zero)
            log_z = torch.logsumexp(
                torch.stack([sign * s(i, a) / t for a in range(len(labels)) if a != i]), 0
            )
            per_anchor.append(
                -torch.stack([sign * s(i, p) / t - log_z for p in positives(i, labels)]).mean()
            )
        return torch.stack(per_anchor).mean()

    spec = {"name": "supcon", "temperature": t, "distance": distance}
    assert_same(ours(spec, rows()), naive(formula, rows(), distance))


def pml_distance(distance: str) -> pml_distances.BaseDistance:
    return pml_distances.CosineSimilarity() if distance == "cosine" else pml_distances.LpDistance()


def pml_reference(
    criterion: torch.nn.Module, miner: torch.nn.Module | None, x: torch.Tensor, labels: torch.Tensor
) -> tuple[float, torch.Tensor]:
    x = x.clone().requires_grad_()
    value = criterion(x, labels, None if miner is None else miner(x, labels))
    (grad,) = torch.autograd.grad(value, x)
    return value.item(), grad


MARGIN = 0.3
MINED = {
    "triplet_semihard": (
        {"name": "triplet", "margin": MARGIN, "miner": "semihard"},
        lambda d: pml_losses.TripletMarginLoss(margin=MARGIN, distance=pml_distance(d)),
        lambda d: pml_miners.TripletMarginMiner(MARGIN, "semihard", distance=pml_distance(d)),
    ),
    "triplet_hard": (
        {"name": "triplet", "margin": MARGIN, "miner": "hard"},
        lambda d: pml_losses.TripletMarginLoss(margin=MARGIN, distance=pml_distance(d)),
        lambda d: pml_miners.TripletMarginMiner(MARGIN, "hard", distance=pml_distance(d)),
    ),
    "triplet_all": (
        {"name": "triplet", "margin": MARGIN, "miner": "all"},
        lambda d: pml_losses.TripletMarginLoss(margin=MARGIN, distance=pml_distance(d)),
        lambda d: pml_miners.TripletMarginMiner(MARGIN, "all", distance=pml_distance(d)),
    ),
    "triplet_batch_hard": (
        {"name": "triplet", "margin": MARGIN, "miner": "batch_hard"},
        lambda d: pml_losses.TripletMarginLoss(margin=MARGIN, distance=pml_distance(d)),
        lambda d: pml_miners.BatchHardMiner(distance=pml_distance(d)),
    ),
    "contrastive_ms": (
        {"name": "contrastive", "pos_margin": 0.0, "neg_margin": 1.0, "miner": "multi_similarity"},
        lambda d: pml_losses.ContrastiveLoss(0.0, 1.0, distance=pml_distance(d)),
        lambda d: pml_miners.MultiSimilarityMiner(0.1, distance=pml_distance(d)),
    ),
    "multi_similarity_ms": (
        {"name": "multi_similarity", "miner": {"name": "multi_similarity", "epsilon": 0.2}},
        lambda d: pml_losses.MultiSimilarityLoss(2.0, 50.0, 0.5, distance=pml_distance(d)),
        lambda d: pml_miners.MultiSimilarityMiner(0.2, distance=pml_distance(d)),
    ),
    "ntxent": (
        {"name": "ntxent", "temperature": 0.1},
        lambda d: pml_losses.NTXentLoss(0.1, distance=pml_distance(d)),
        lambda d: None,
    ),
    "supcon_batch_hard": (
        {"name": "supcon", "temperature": 0.2, "miner": "batch_hard"},
        lambda d: pml_losses.SupConLoss(0.2, distance=pml_distance(d)),
        lambda d: pml_miners.BatchHardMiner(distance=pml_distance(d)),
    ),
}


@pytest.mark.parametrize("distance", ["cosine", "l2"])
@pytest.mark.parametrize("case", sorted(MINED))
def test_loss_and_miner_match_pml_built_with_the_same_settings(case: str, distance: str) -> None:
    spec, criterion, miner = MINED[case]
    x = rows()
    want = pml_reference(criterion(distance), miner(distance), x, LABELS)
    assert_same(ours(spec | {"distance": distance}, x), want)
    # two views without labels: rows i and i + B are the only positives (instance labels)
    views = x + 0.3 * torch.randn_like(x)
    instance = torch.arange(len(x))
    want = pml_reference(
        criterion(distance), miner(distance), torch.cat([x, views]), torch.cat([instance, instance])
    )
    got_value, _ = ours(spec | {"distance": distance}, x, None, views)
    assert got_value == pytest.approx(want[0], rel=1e-5, abs=1e-6)


def test_arcface_value_and_gradients_match_pml_and_deng_2019() -> None:
    margin_degrees, scale, classes = 25.0, 16.0, 6
    loss = create_loss(
        {"name": "arcface", "margin": margin_degrees, "scale": scale},
        embedding_dim=DIM,
        num_classes=classes,
    )
    torch.manual_seed(3)
    centres = torch.randn(DIM, classes)
    loss.criterion.W.data.copy_(centres)
    x = rows()
    x[1] = -centres[:, 0] * 2.0  # theta near pi: the monotonic branch, its gradient too
    embeddings = x.clone().requires_grad_()
    value = loss(embeddings, LABELS)["loss"]
    value.backward()
    assert [name for name, _ in loss.named_parameters()] == ["criterion.W"]

    reference = pml_losses.ArcFaceLoss(classes, DIM, margin=margin_degrees, scale=scale)
    reference.W.data.copy_(centres)
    pml_x = x.clone().requires_grad_()
    pml_value = reference(pml_x, LABELS)
    pml_value.backward()
    assert value.item() == pytest.approx(pml_value.item(), rel=1e-6)
    torch.testing.assert_close(embeddings.grad, pml_x.grad)
    torch.testing.assert_close(loss.criterion.W.grad, reference.W.grad)

    # Deng et al. 2019, eq. 3, margin in radians; float64 autograd
    m = math.radians(margin_degrees)
    x64 = x.double().requires_grad_()
    w64 = centres.double().requires_grad_()
    cosine = F.normalize(x64, dim=1) @ F.normalize(w64, dim=0)
    total = torch.zeros((), dtype=torch.float64)
    for i, y in enumerate(LABELS.tolist()):
        theta = torch.acos(cosine[i, y].clamp(-1 + 1e-12, 1 - 1e-12))
        if theta.item() <= math.pi - m:
            target = torch.cos(theta + m)
        else:
            target = torch.cos(theta) - m * math.sin(m)
        logits = torch.cat([cosine[i, :y], target[None], cosine[i, y + 1 :]]) * scale
        total = total - torch.log_softmax(logits, 0)[y]
    (total / len(LABELS)).backward()
    assert value.item() == pytest.approx(total.item() / len(LABELS), rel=1e-5)
    torch.testing.assert_close(embeddings.grad, x64.grad.float(), rtol=1e-3, atol=1e-5)
    torch.testing.assert_close(loss.criterion.W.grad, w64.grad.float(), rtol=1e-3, atol=1e-5)


def test_arcface_exported_classifier_is_its_centres() -> None:
    loss = create_loss({"name": "arcface", "scale": 10.0}, embedding_dim=DIM, num_classes=4)
    x = rows()
    exported = loss.export_classifier(["a", "b", "c", "d"])
    with torch.no_grad():
        cosine = F.normalize(x, dim=1) @ F.normalize(loss.criterion.W, dim=0)
        want = torch.softmax(10.0 * cosine, dim=1)
        torch.testing.assert_close(loss.class_probabilities(x), want)
        torch.testing.assert_close(torch.softmax(exported.head(x), dim=1), want)


def test_proxy_anchor_gradients_match_kim_2020() -> None:
    delta, alpha, classes = 0.1, 8.0, 6  # class 5 has no sample: a negative-only proxy
    loss = create_loss(
        {"name": "proxy_anchor", "margin": delta, "alpha": alpha},
        embedding_dim=DIM,
        num_classes=classes,
    )
    x = rows().requires_grad_()
    value = loss(x, LABELS)["loss"]
    got = torch.autograd.grad(value, (x, loss.criterion.proxies))

    x64 = x.detach().double().requires_grad_()
    p64 = loss.criterion.proxies.detach().double().requires_grad_()
    sim = F.normalize(x64, dim=1) @ F.normalize(p64, dim=1).T
    present = sorted(set(LABELS.tolist()))
    pull = sum(
        torch.log1p(
            sum(
                torch.exp(-alpha * (sim[i, p] - delta))
                for i in range(len(LABELS))
                if LABELS[i] == p
            )
        )
        for p in present
    ) / len(present)
    push = (
        sum(
            torch.log1p(
                sum(
                    torch.exp(alpha * (sim[i, p] + delta))
                    for i in range(len(LABELS))
                    if LABELS[i] != p
                )
            )
            for p in range(classes)
        )
        / classes
    )
    want = torch.autograd.grad(pull + push, (x64, p64))
    assert value.item() == pytest.approx((pull + push).item(), rel=1e-5)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w.float(), rtol=1e-4, atol=1e-6)
