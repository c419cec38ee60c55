"""Review: value AND gradient of our own losses (CLIP, BCE, consistency, hybrid) against naive
float64 formulas; refusals; degenerate batches; the loss of a gathered DDP batch."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lookalike.losses import ViewPairs, create_loss

N, D, C = 6, 5, 4


def grads(value: torch.Tensor, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
    return torch.autograd.grad(value, inputs, allow_unused=True)


def test_clip_gradients_match_radford_2021_both_directions() -> None:
    torch.manual_seed(0)
    images, texts = torch.randn(N, D, requires_grad=True), torch.randn(N, D, requires_grad=True)
    loss = create_loss({"name": "clip", "init_temperature": 0.2}, embedding_dim=D, num_classes=None)
    value = loss(images, text_embeddings=texts)["loss"]
    got = grads(value, images, texts, loss.logit_scale)

    i64, t64 = images.detach().double().requires_grad_(), texts.detach().double().requires_grad_()
    log_scale = torch.tensor(math.log(1 / 0.2), dtype=torch.float64, requires_grad=True)
    i_n, t_n = F.normalize(i64, dim=1), F.normalize(t64, dim=1)
    image_to_text = sum(
        -torch.log(
            torch.exp(log_scale.exp() * i_n[i] @ t_n[i])
            / sum(torch.exp(log_scale.exp() * i_n[i] @ t_n[j]) for j in range(N))
        )
        for i in range(N)
    )
    text_to_image = sum(
        -torch.log(
            torch.exp(log_scale.exp() * t_n[j] @ i_n[j])
            / sum(torch.exp(log_scale.exp() * t_n[j] @ i_n[i]) for i in range(N))
        )
        for j in range(N)
    )
    want_value = (image_to_text + text_to_image) / (2 * N)
    want = grads(want_value, i64, t64, log_scale)
    assert value.item() == pytest.approx(want_value.item(), rel=1e-5)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w.float(), rtol=1e-4, atol=1e-6)


def test_bce_gradient_matches_a_loop_over_classes() -> None:
    loss = create_loss("bce", embedding_dim=D, num_classes=C)
    torch.manual_seed(1)
    x = torch.randn(N, D, requires_grad=True)
    targets = (torch.rand(N, C) > 0.5).float()
    value = loss(x, targets)["loss"]
    got = grads(value, x, loss.head.linear.weight)
    x64 = x.detach().double().requires_grad_()
    w64 = loss.head.linear.weight.detach().double().requires_grad_()
    logits = x64 @ w64.T + loss.head.linear.bias.detach().double()
    want_value = sum(
        -(
            targets[n, c] * torch.log(torch.sigmoid(logits[n, c]))
            + (1 - targets[n, c]) * torch.log(1 - torch.sigmoid(logits[n, c]))
        )
        for n in range(N)
        for c in range(C)
    ) / (N * C)
    want = grads(want_value, x64, w64)
    assert value.item() == pytest.approx(want_value.item(), rel=1e-5)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w.float(), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(
    ("classifier", "divergence"),
    [
        ("bce", "consistency_mse"),
        ("cross_entropy", "consistency_mse"),
        ("bce", "consistency_kl"),
        ("cross_entropy", "consistency_kl"),
    ],
)
def test_consistency_target_is_the_stopped_weak_output(classifier: str, divergence: str) -> None:
    """FixMatch / UDA: the weak view's probabilities are a constant target, so neither the weak
    embeddings nor the classifier weights get a gradient through them; only the strong side."""
    loss = create_loss(
        {"name": "hybrid", "parts": [classifier, divergence]}, embedding_dim=D, num_classes=C
    )
    head = loss.parts[classifier].head
    torch.manual_seed(2)
    weak, strong = torch.randn(N, D, requires_grad=True), torch.randn(N, D, requires_grad=True)
    parts = loss.parts[divergence](weak, view_pairs=ViewPairs(weak, strong))
    got = grads(parts[divergence], strong, head.linear.weight, head.linear.bias)

    sigmoid = classifier == "bce"
    activate = torch.sigmoid if sigmoid else (lambda z: torch.softmax(z, dim=1))
    w64 = head.linear.weight.detach().double().requires_grad_()
    b64 = head.linear.bias.detach().double().requires_grad_()
    s64 = strong.detach().double().requires_grad_()
    p = activate(weak.detach().double() @ w64.detach().T + b64.detach())  # the constant target
    q = activate(s64 @ w64.T + b64)
    if divergence == "consistency_mse":
        want_value = ((q - p) ** 2).mean()
    elif sigmoid:
        want_value = (p * torch.log(p / q) + (1 - p) * torch.log((1 - p) / (1 - q))).sum(1).mean()
    else:
        want_value = (p * torch.log(p / q)).sum(1).mean()
    want = grads(want_value, s64, w64, b64)
    assert parts[divergence].item() == pytest.approx(want_value.item(), rel=1e-5)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w.float(), rtol=1e-4, atol=1e-7)


def test_consistency_without_detach_trains_both_sides() -> None:
    spec = {"name": "hybrid", "parts": ["bce", {"name": "consistency_mse", "detach_target": False}]}
    loss = create_loss(spec, embedding_dim=D, num_classes=C)
    head = loss.parts["bce"].head
    weak, strong = torch.randn(N, D, requires_grad=True), torch.randn(N, D)
    value = loss.parts["consistency_mse"](weak, view_pairs=ViewPairs(weak, strong))
    got = grads(value["consistency_mse"], weak, head.linear.weight)
    want_value = F.mse_loss(torch.sigmoid(head(strong)), torch.sigmoid(head(weak)))
    for g, w in zip(got, grads(want_value, weak, head.linear.weight), strict=True):
        torch.testing.assert_close(g, w)


def test_hybrid_gradient_is_the_weighted_sum_with_the_ramp() -> None:
    spec = {
        "name": "hybrid",
        "parts": [
            "cross_entropy",
            {"name": "supcon", "weight": 0.5},
            {"name": "consistency_kl", "weight": 3.0, "rampup_steps": 10},
        ],
    }
    loss = create_loss(spec, embedding_dim=D, num_classes=C)
    torch.manual_seed(4)
    x, strong = torch.randn(N, D, requires_grad=True), torch.randn(N, D, requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1, 2, 3])
    pairs = ViewPairs(x, strong)
    parts = loss(x, labels, view_pairs=pairs, step=4)
    assert set(parts) == {
        "loss",
        "cross_entropy",
        "supcon",
        "consistency_kl",
        "consistency_kl_rampup",
    }
    ramp = math.exp(-5 * 0.6**2)
    assert parts["consistency_kl_rampup"].item() == pytest.approx(ramp)
    got = grads(parts["loss"], x, strong)
    pieces = [
        loss.parts[k](x, labels, view_pairs=pairs, step=4)[k]
        for k in ("cross_entropy", "supcon", "consistency_kl")
    ]
    want_value = pieces[0] + 0.5 * pieces[1] + 3.0 * ramp * pieces[2]
    assert parts["loss"].item() == pytest.approx(want_value.item(), rel=1e-6)
    for g, w in zip(got, grads(want_value, x, strong), strict=True):
        torch.testing.assert_close(g, w)


def test_simsiam_with_captions_but_no_second_view_is_a_one_line_refusal() -> None:
    loss = create_loss(
        {"name": "simsiam", "projection_dim": 8, "predictor_dim": 4},
        embedding_dim=D,
        num_classes=None,
    )
    with pytest.raises(ValueError, match="loss 'simsiam' needs two views of each image"):
        loss.validate(has_labels=False, has_text=True, has_views=False)
    with pytest.raises(ValueError, match="loss 'simsiam' needs two views of each image"):
        loss(torch.randn(N, D), text_embeddings=torch.randn(N, D))
    hybrid = create_loss(
        {
            "name": "hybrid",
            "parts": ["clip", {"name": "simsiam", "projection_dim": 8, "predictor_dim": 4}],
        },
        embedding_dim=D,
        num_classes=None,
    )
    with pytest.raises(ValueError, match="loss 'simsiam' needs two views of each image"):
        hybrid.validate(has_labels=False, has_text=True, has_views=False)


LABELLED = [
    "triplet",
    "contrastive",
    "multi_similarity",
    "ntxent",
    "supcon",
    "arcface",
    "proxy_anchor",
    "cross_entropy",
    "bce",
]


@pytest.mark.parametrize(
    "labels", [[3, 3, 3, 3, 3, 3], [0, 1, 2, 3, 4, 5]], ids=["one_class", "all_singletons"]
)
@pytest.mark.parametrize("name", LABELLED)
def test_degenerate_batches_give_finite_values_and_gradients(name: str, labels: list[int]) -> None:
    loss = create_loss(name, embedding_dim=D, num_classes=C + 2)
    x = torch.randn(N, D, requires_grad=True)
    value = loss(x, torch.tensor(labels))["loss"]
    value.backward()
    assert torch.isfinite(value) and x.grad is not None and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("name", ["arcface", "proxy_anchor", "cross_entropy", "bce"])
def test_class_losses_without_labels_are_one_line_errors(name: str) -> None:
    loss = create_loss(name, embedding_dim=D, num_classes=C)
    with pytest.raises(
        ValueError, match=f"^loss '{name}' needs class labels: give the data a label column$"
    ):
        loss(torch.randn(N, D), positive_embeddings=torch.randn(N, D))


DDP_SPECS = {
    "triplet_semihard": {"name": "triplet", "miner": "semihard"},
    "supcon": "supcon",
    "ntxent_views": "ntxent",
    "arcface": "arcface",
    "proxy_anchor": "proxy_anchor",
    "clip_views": "clip",
    "simsiam": {"name": "simsiam", "projection_dim": 8, "predictor_dim": 4},
    "hybrid": {"name": "hybrid", "parts": ["bce", "ntxent", "consistency_mse"]},
}


@pytest.mark.parametrize("case", sorted(DDP_SPECS))
def test_gathered_batch_gradients_are_the_single_process_ones(case: str) -> None:
    """Under DDP every rank computes the loss of the gathered batch with gradient on its own rows
    only (train/distributed.py); the ranks' row gradients together, and their averaged parameter
    gradients, must be the single-process gradients."""
    torch.manual_seed(5)
    loss = create_loss(DDP_SPECS[case], embedding_dim=D, num_classes=C)
    x, views = torch.randn(8, D), torch.randn(8, D)
    labels = None if case.endswith("views") else torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    params = [p for p in loss.parameters() if p.requires_grad]

    def run(x: torch.Tensor, views: torch.Tensor) -> torch.Tensor:
        return loss(x, labels, positive_embeddings=views, view_pairs=ViewPairs(views, x))["loss"]

    full_x, full_v = x.clone().requires_grad_(), views.clone().requires_grad_()
    want = grads(run(full_x, full_v), full_x, full_v, *params)
    row_grads = [torch.zeros_like(x), torch.zeros_like(views)]
    param_grads = [torch.zeros_like(p) for p in params]
    for rank in range(2):
        own = slice(4 * rank, 4 * rank + 4)
        local_x, local_v = x[own].clone().requires_grad_(), views[own].clone().requires_grad_()
        gathered_x, gathered_v = x.clone(), views.clone()
        gathered_x[own], gathered_v[own] = local_x, local_v
        got = grads(run(gathered_x, gathered_v), local_x, local_v, *params)
        row_grads[0][own], row_grads[1][own] = got[0], got[1]
        for total, g in zip(param_grads, got[2:], strict=True):
            total += g / 2
    for g, w in zip([*row_grads, *param_grads], want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-7)


def test_cosine_consistency_gradient_reaches_the_strong_view_only() -> None:
    loss = create_loss("consistency_cosine", embedding_dim=D, num_classes=None)
    weak, strong = torch.randn(N, D, requires_grad=True), torch.randn(N, D, requires_grad=True)
    value = loss(weak, view_pairs=ViewPairs(weak, strong))["consistency_cosine"]
    got = grads(value, weak, strong)
    s64 = strong.detach().double().requires_grad_()
    w64 = weak.detach().double()
    want_value = sum(1 - (w64[n] @ s64[n]) / (w64[n].norm() * s64[n].norm()) for n in range(N)) / N
    assert got[0] is None
    torch.testing.assert_close(got[1], grads(want_value, s64)[0].float(), rtol=1e-4, atol=1e-7)


def test_cross_entropy_gradient_with_label_smoothing_matches_szegedy() -> None:
    eps = 0.1
    loss = create_loss(
        {"name": "cross_entropy", "label_smoothing": eps, "normalized": True, "scale": 8.0},
        embedding_dim=D,
        num_classes=C,
    )
    x, labels = torch.randn(N, D, requires_grad=True), torch.tensor([0, 1, 2, 3, 0, 0])
    value = loss(x, labels)["loss"]
    weight = loss.head.linear.weight
    got = grads(value, x, weight)
    x64, w64 = x.detach().double().requires_grad_(), weight.detach().double().requires_grad_()
    logits = 8.0 * F.normalize(x64, dim=1) @ F.normalize(w64, dim=1).T
    log_p = torch.log_softmax(logits, dim=1)
    want_value = (
        -sum((1 - eps) * log_p[n, labels[n]] + eps / C * log_p[n].sum() for n in range(N)) / N
    )
    assert value.item() == pytest.approx(want_value.item(), rel=1e-5)
    for g, w in zip(got, grads(want_value, x64, w64), strict=True):
        torch.testing.assert_close(g, w.float(), rtol=1e-4, atol=1e-6)
