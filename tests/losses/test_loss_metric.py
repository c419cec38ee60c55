"""Pair and triplet losses (pml behind our contract) against naive loops written from the papers."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from lookalike.losses import RetrievalLoss, create_loss

LABELS = torch.tensor([0, 0, 0, 1, 1, 2, 2, 3])


def make(spec: dict | str) -> RetrievalLoss:
    return create_loss(spec, embedding_dim=5, num_classes=None)


@pytest.fixture
def embeddings() -> torch.Tensor:
    return F.normalize(torch.randn(len(LABELS), 5), dim=1)


def similarity_matrix(rows: torch.Tensor, distance: str) -> torch.Tensor:
    """Cosine similarities, or Euclidean distances between L2-normalised rows (float64)."""
    rows = F.normalize(rows.double(), dim=1)
    if distance == "cosine":
        return rows @ rows.T
    return torch.sqrt(((rows[:, None, :] - rows[None, :, :]) ** 2).sum(-1))


def all_triplets(labels: torch.Tensor) -> list[tuple[int, int, int]]:
    n = len(labels)
    return [
        (a, p, q)
        for a, p, q in itertools.product(range(n), repeat=3)
        if a != p and labels[a] == labels[p] and labels[q] != labels[a]
    ]


def triplet_violation(
    mat: torch.Tensor, a: int, p: int, n: int, margin: float, distance: str
) -> float:
    if distance == "cosine":
        return float(mat[a, n] - mat[a, p] + margin)
    return float(mat[a, p] - mat[a, n] + margin)


def mean_of_positive(values: list[float]) -> float:
    positive = [v for v in values if v > 0]
    return sum(positive) / len(positive) if positive else 0.0


@pytest.mark.parametrize("distance", ["cosine", "l2"])
def test_triplet_all_triplets_matches_naive_loop(embeddings: torch.Tensor, distance: str) -> None:
    margin = 0.3
    loss = make({"name": "triplet", "margin": margin, "distance": distance})
    mat = similarity_matrix(embeddings, distance)
    expected = mean_of_positive(
        [
            max(0.0, triplet_violation(mat, a, p, n, margin, distance))
            for a, p, n in all_triplets(LABELS)
        ]
    )
    parts = loss(embeddings, LABELS)
    assert set(parts) == {"loss", "triplet"}
    assert parts["loss"].item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("distance", ["cosine", "l2"])
@pytest.mark.parametrize("kind", ["semihard", "hard"])
def test_triplet_with_margin_miner_matches_naive_mining(
    embeddings: torch.Tensor, distance: str, kind: str
) -> None:
    margin = 0.5
    loss = make({"name": "triplet", "margin": margin, "distance": distance, "miner": kind})
    mat = similarity_matrix(embeddings, distance)
    kept = []
    for a, p, n in all_triplets(LABELS):
        # how far the negative is beyond the positive (FaceNet): d_an - d_ap, or s_ap - s_an
        gap = margin - triplet_violation(mat, a, p, n, margin, distance)
        if gap <= margin and (gap > 0 if kind == "semihard" else gap <= 0):
            kept.append((a, p, n))
    assert kept, "the fixture must contain triplets of this kind"
    violations = [triplet_violation(mat, a, p, n, margin, distance) for a, p, n in kept]
    expected = mean_of_positive(violations)
    assert loss(embeddings, LABELS)["loss"].item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("distance", ["cosine", "l2"])
def test_triplet_with_batch_hard_miner_matches_naive_mining(
    embeddings: torch.Tensor, distance: str
) -> None:
    margin = 0.2
    loss = make({"name": "triplet", "margin": margin, "distance": distance, "miner": "batch_hard"})
    mat = similarity_matrix(embeddings, distance)
    closer = (lambda x, y: x > y) if distance == "cosine" else (lambda x, y: x < y)
    values = []
    for a in range(len(LABELS)):
        positives = [p for p in range(len(LABELS)) if p != a and LABELS[p] == LABELS[a]]
        negatives = [n for n in range(len(LABELS)) if LABELS[n] != LABELS[a]]
        if not positives:
            continue
        hardest_p = positives[0]
        for p in positives:
            if closer(mat[a, hardest_p], mat[a, p]):
                hardest_p = p
        hardest_n = negatives[0]
        for n in negatives:
            if closer(mat[a, n], mat[a, hardest_n]):
                hardest_n = n
        values.append(max(0.0, triplet_violation(mat, a, hardest_p, hardest_n, margin, distance)))
    expected = mean_of_positive(values)
    assert loss(embeddings, LABELS)["loss"].item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize(
    ("distance", "pos_margin", "neg_margin"),
    [("cosine", 0.8, 0.1), ("l2", 0.3, 1.2), ("cosine", None, None)],
)
def test_contrastive_matches_naive_pairs(
    embeddings: torch.Tensor, distance: str, pos_margin: float | None, neg_margin: float | None
) -> None:
    spec = {"name": "contrastive", "distance": distance}
    spec |= {"pos_margin": pos_margin, "neg_margin": neg_margin}
    loss = make(spec)
    if pos_margin is None:  # the cosine defaults: pull positives to 1, push negatives below 0
        pos_margin, neg_margin = 1.0, 0.0
    mat = similarity_matrix(embeddings, distance)
    pos, neg = [], []
    for a, b in itertools.permutations(range(len(LABELS)), 2):
        if LABELS[a] == LABELS[b]:
            pos.append(pos_margin - mat[a, b] if distance == "cosine" else mat[a, b] - pos_margin)
        else:
            neg.append(mat[a, b] - neg_margin if distance == "cosine" else neg_margin - mat[a, b])
    expected = mean_of_positive([float(v) for v in pos]) + mean_of_positive([float(v) for v in neg])
    assert loss(embeddings, LABELS)["loss"].item() == pytest.approx(expected, rel=1e-5)


def test_multi_similarity_matches_wang_2019(embeddings: torch.Tensor) -> None:
    alpha, beta, base = 2.0, 10.0, 0.3
    spec = {"name": "multi_similarity", "alpha": alpha, "beta": beta, "base": base}
    loss = make(spec)
    sim = similarity_matrix(embeddings, "cosine")
    total = 0.0
    for i in range(len(LABELS)):
        positives = [k for k in range(len(LABELS)) if k != i and LABELS[k] == LABELS[i]]
        negatives = [k for k in range(len(LABELS)) if LABELS[k] != LABELS[i]]
        pos = sum(math.exp(-alpha * (sim[i, k] - base)) for k in positives)
        neg = sum(math.exp(beta * (sim[i, k] - base)) for k in negatives)
        total += math.log(1 + pos) / alpha + math.log(1 + neg) / beta
    assert loss(embeddings, LABELS)["loss"].item() == pytest.approx(total / len(LABELS), rel=1e-5)


def test_ntxent_on_two_views_without_labels_is_simclr(embeddings: torch.Tensor) -> None:
    temperature = 0.5
    views = F.normalize(embeddings + 0.3 * torch.randn_like(embeddings), dim=1)
    loss = make({"name": "ntxent", "temperature": temperature})
    # SimCLR (Chen et al. 2020): 2B rows; row i's only positive is its other view,
    # the softmax runs over all other rows
    rows = F.normalize(torch.cat([embeddings, views]).double(), dim=1)
    logits = rows @ rows.T / temperature
    logits.fill_diagonal_(float("-inf"))
    batch = len(embeddings)
    targets = torch.cat([torch.arange(batch, 2 * batch), torch.arange(batch)])
    expected = F.cross_entropy(logits, targets).item()
    value = loss(embeddings, positive_embeddings=views)["loss"]
    assert value.item() == pytest.approx(expected, rel=1e-5)


def test_ntxent_with_labels_matches_naive_pairs(embeddings: torch.Tensor) -> None:
    temperature = 0.2
    loss = make({"name": "ntxent", "temperature": temperature})
    sim = similarity_matrix(embeddings, "cosine") / temperature
    values = []
    for a, p in itertools.permutations(range(len(LABELS)), 2):
        if LABELS[a] != LABELS[p]:
            continue
        negatives = sum(math.exp(sim[a, n]) for n in range(len(LABELS)) if LABELS[n] != LABELS[a])
        values.append(-math.log(math.exp(sim[a, p]) / (math.exp(sim[a, p]) + negatives)))
    expected = sum(values) / len(values)
    assert loss(embeddings, LABELS)["loss"].item() == pytest.approx(expected, rel=1e-5)


def test_supcon_on_labelled_views_matches_khosla_2020(embeddings: torch.Tensor) -> None:
    temperature = 0.1
    views = F.normalize(embeddings + 0.3 * torch.randn_like(embeddings), dim=1)
    loss = make({"name": "supcon", "temperature": temperature})
    rows = torch.cat([embeddings, views])
    labels = torch.cat([LABELS, LABELS])
    sim = similarity_matrix(rows, "cosine") / temperature
    per_anchor = []
    for i in range(len(rows)):
        others = [a for a in range(len(rows)) if a != i]
        positives = [p for p in others if labels[p] == labels[i]]
        log_denominator = math.log(sum(math.exp(sim[i, a]) for a in others))
        per_anchor.append(-sum(sim[i, p] - log_denominator for p in positives) / len(positives))
    expected = float(sum(per_anchor) / len(per_anchor))
    value = loss(embeddings, LABELS, positive_embeddings=views)["loss"]
    assert value.item() == pytest.approx(expected, rel=1e-5)


def test_second_view_rows_share_class_labels(embeddings: torch.Tensor) -> None:
    views = F.normalize(torch.randn_like(embeddings), dim=1)
    loss = make({"name": "triplet", "margin": 0.3})
    stacked = loss(torch.cat([embeddings, views]), torch.cat([LABELS, LABELS]))["loss"]
    value = loss(embeddings, LABELS, positive_embeddings=views)["loss"]
    assert value.item() == pytest.approx(stacked.item())


def test_text_embeddings_do_not_change_a_metric_loss(embeddings: torch.Tensor) -> None:
    loss = make("supcon")
    plain = loss(embeddings, LABELS)["loss"]
    with_text = loss(embeddings, LABELS, text_embeddings=torch.randn_like(embeddings))["loss"]
    assert with_text.item() == pytest.approx(plain.item())


def test_metric_losses_reject_multi_hot_labels(embeddings: torch.Tensor) -> None:
    loss = make("triplet")
    with pytest.raises(ValueError, match=r"\(B,\) integer labels"):
        loss(embeddings, F.one_hot(LABELS).float())


def test_miner_margin_can_differ_from_the_loss_margin(embeddings: torch.Tensor) -> None:
    loss_margin, miner_margin = 0.5, 0.2
    miner = {"name": "semihard", "margin": miner_margin}
    loss = make({"name": "triplet", "margin": loss_margin, "miner": miner})
    mat = similarity_matrix(embeddings, "cosine")
    values = []
    for a, p, n in all_triplets(LABELS):
        gap = float(mat[a, p] - mat[a, n])
        if 0 < gap <= miner_margin:
            values.append(triplet_violation(mat, a, p, n, loss_margin, "cosine"))
    assert values, "the fixture must contain semihard triplets"
    expected = mean_of_positive(values)
    assert loss(embeddings, LABELS)["loss"].item() == pytest.approx(expected, rel=1e-5)
