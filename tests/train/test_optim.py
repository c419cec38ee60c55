"""Optimiser groups (layer decay, no-decay split, what is left out) and the LR schedule."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from lookalike.losses import create_loss
from lookalike.models import create_embedder
from lookalike.models.embedder import Embedder
from lookalike.train.finetune import FinetuneSpec, apply_finetune
from lookalike.train.optim import (
    OPTIMIZERS,
    OptimSpec,
    create_optimizer,
    create_scheduler,
    param_groups,
)

DEPTH = 3


def tiny_vit() -> Embedder:
    return create_embedder(
        "timm:vit_tiny_patch16_224", weights=None, head="linear:8", pool="gem", img_size=32,
        patch_size=8, embed_dim=32, depth=DEPTH, num_heads=2,
    )  # fmt: skip


def arcface() -> nn.Module:
    return create_loss("arcface", embedding_dim=8, num_classes=3)


def named_groups(
    embedder: Embedder, loss: nn.Module, groups: list[dict]
) -> dict[str, tuple[float, float, set[str]]]:
    """group name -> (lr, weight decay, parameter names as 'embedder.*' / 'loss.*')."""
    names = {id(p): f"embedder.{n}" for n, p in embedder.named_parameters()}
    names.update({id(p): f"loss.{n}" for n, p in loss.named_parameters()})
    return {
        g["name"]: (g["lr"], g["weight_decay"], {names[id(p)] for p in g["params"]})
        for g in groups
    }


def test_layer_decay_and_no_decay_groups_follow_the_closed_form() -> None:
    embedder, loss = tiny_vit(), arcface()
    finetune = FinetuneSpec("full")
    apply_finetune(embedder, finetune)
    spec = OptimSpec(lr=1e-3, head_lr=2e-2, loss_lr=3e-1, weight_decay=0.05, layer_decay=0.5)
    groups = named_groups(embedder, loss, param_groups(embedder, loss, spec, finetune))

    every = {f"embedder.{n}": p for n, p in embedder.named_parameters()}
    every.update({f"loss.{n}": p for n, p in loss.named_parameters()})

    def section(prefixes: tuple[str, ...]) -> dict[str, set[str]]:
        members = {n for n in every if n.startswith(prefixes)}
        return {
            "decay": {n for n in members if every[n].ndim > 1},
            "no_decay": {n for n in members if every[n].ndim <= 1},
        }

    stem = ("embedder.backbone.model.cls_token", "embedder.backbone.model.pos_embed",
            "embedder.backbone.model.patch_embed.")  # fmt: skip
    expected: dict[str, tuple[float, dict[str, set[str]]]] = {
        "backbone.stem": (1e-3 * 0.5**DEPTH, section(stem)),
        **{
            f"backbone.model.blocks.{i}": (
                1e-3 * 0.5 ** (DEPTH - 1 - i),
                section((f"embedder.backbone.model.blocks.{i}.",)),
            )
            for i in range(DEPTH)
        },
        "backbone.tail": (1e-3, section(("embedder.backbone.model.norm.",))),
        "head": (2e-2, section(("embedder.pooling.", "embedder.head."))),
        "loss": (3e-1, section(("loss.",))),
    }
    wanted = {}
    for name, (lr, parts) in expected.items():
        if parts["decay"]:
            wanted[name] = (lr, 0.05, parts["decay"])
        if parts["no_decay"]:
            wanted[f"{name}.no_decay"] = (lr, 0.0, parts["no_decay"])
    assert list(groups) == list(wanted)
    for name, (lr, decay, members) in wanted.items():
        assert groups[name][0] == pytest.approx(lr), name
        assert groups[name][1:] == (decay, members), name
    covered = set().union(*(members for _, _, members in groups.values()))
    assert covered == set(every)
    assert "embedder.pooling.p" in groups["head.no_decay"][2]
    assert "loss.criterion.W" in groups["loss"][2]


def test_default_rates_fall_back_to_the_backbone_rate() -> None:
    embedder, loss = tiny_vit(), arcface()
    finetune = FinetuneSpec("frozen")
    apply_finetune(embedder, finetune)
    spec = OptimSpec(lr=0.01, head_lr=None, loss_lr=None)
    groups = param_groups(embedder, loss, spec, finetune)
    assert {g["name"]: g["lr"] for g in groups} == {
        "head": 0.01, "head.no_decay": 0.01, "loss": 0.01,
    }  # fmt: skip
    spec = OptimSpec(lr=0.01, head_lr=0.1, loss_lr=None)
    assert {g["name"]: g["lr"] for g in param_groups(embedder, loss, spec, finetune)} == {
        "head": 0.1, "head.no_decay": 0.1, "loss": 0.1,
    }  # fmt: skip


def _backbone_members(embedder: Embedder, groups: list[dict]) -> set[str]:
    names = {id(p): n for n, p in embedder.backbone.named_parameters()}
    return {names[id(p)] for g in groups for p in g["params"] if id(p) in names}


def test_params_frozen_for_the_whole_run_are_left_out() -> None:
    embedder = tiny_vit()
    finetune = FinetuneSpec("last_n", last_n=1)
    apply_finetune(embedder, finetune)
    groups = param_groups(embedder, None, OptimSpec(), finetune)
    last = {n for n, _ in embedder.backbone.named_parameters() if n.startswith("model.blocks.2.")}
    assert _backbone_members(embedder, groups) == last
    assert [g["name"] for g in groups] == [
        "backbone.model.blocks.2", "backbone.model.blocks.2.no_decay", "head", "head.no_decay"
    ]  # fmt: skip

    embedder = tiny_vit()
    finetune = FinetuneSpec("lora")
    apply_finetune(embedder, finetune)
    members = _backbone_members(embedder, param_groups(embedder, None, OptimSpec(), finetune))
    assert members == {n for n, _ in embedder.backbone.named_parameters() if ".lora_" in n}
    assert len(members) == 2 * DEPTH


def test_lora_groups_need_apply_finetune_first() -> None:
    with pytest.raises(ValueError, match="call apply_finetune"):
        param_groups(tiny_vit(), None, OptimSpec(), FinetuneSpec("lora"))


def test_params_unfrozen_later_are_held_but_untouched_while_frozen() -> None:
    embedder, loss = tiny_vit(), arcface()
    finetune = FinetuneSpec("freeze_then_unfreeze", unfreeze_epoch=1, last_n=0)
    optimizer = None
    for epoch in (0, 1):
        apply_finetune(embedder, finetune, epoch)
        if optimizer is None:
            optimizer = create_optimizer(embedder, loss, OptimSpec(weight_decay=0.1), finetune)
            held = _backbone_members(embedder, optimizer.param_groups)
            assert held == {n for n, _ in embedder.backbone.named_parameters()}
        before = {n: p.detach().clone() for n, p in embedder.backbone.named_parameters()}
        optimizer.zero_grad()
        images, labels = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 0])
        loss(embedder(images), labels)["loss"].backward()
        optimizer.step()
        parameters = embedder.backbone.named_parameters()
        unchanged = [n for n, p in parameters if torch.equal(p, before[n])]
        assert (unchanged == list(before)) == (epoch == 0)


@pytest.mark.parametrize("name", ["adamw", "sgd"])
def test_create_optimizer_builds_the_named_optimizer(name: str) -> None:
    embedder, loss = tiny_vit(), arcface()
    finetune = FinetuneSpec("full")
    apply_finetune(embedder, finetune)
    spec = OptimSpec(name=name, weight_decay=0.01, momentum=0.8)
    optimizer = create_optimizer(embedder, loss, spec, finetune)
    kind = {"adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}[name]
    assert type(optimizer) is kind
    assert all("name" in group for group in optimizer.param_groups)
    if name == "sgd":
        assert {g["momentum"] for g in optimizer.param_groups} == {0.8}
    centres = loss.criterion.W.detach().clone()
    loss(embedder(torch.randn(4, 3, 32, 32)), torch.tensor([0, 1, 2, 0]))["loss"].backward()
    optimizer.step()
    assert not torch.equal(loss.criterion.W, centres)


def test_bad_optimiser_options_are_rejected() -> None:
    embedder = tiny_vit()
    finetune = FinetuneSpec("full")
    apply_finetune(embedder, finetune)
    assert OPTIMIZERS.names() == ["adamw", "sgd"]
    with pytest.raises(ValueError, match="unknown optimizer 'lamb'; valid names: adamw, sgd"):
        create_optimizer(embedder, None, OptimSpec(name="lamb"), finetune)
    with pytest.raises(ValueError, match="layer_decay must be in"):
        param_groups(embedder, None, OptimSpec(layer_decay=1.5), finetune)


def reference_factor(step: int, warmup: int, total: int, min_ratio: float, cosine: bool) -> float:
    if step < warmup:
        return step / warmup
    if not cosine:
        return 1.0
    t = min(1.0, (step - warmup) / (total - warmup))
    return min_ratio + (1 - min_ratio) * (1 + math.cos(math.pi * t)) / 2


@pytest.mark.parametrize(("schedule", "warmup"), [("cosine", 3), ("cosine", 0), ("constant", 4)])
def test_scheduler_follows_warmup_then_cosine(schedule: str, warmup: int) -> None:
    parameters = [nn.Parameter(torch.zeros(2)), nn.Parameter(torch.zeros(2))]
    optimizer = torch.optim.SGD(
        [{"params": parameters[:1], "lr": 0.1}, {"params": parameters[1:], "lr": 0.02}], lr=0.5
    )
    spec = OptimSpec(warmup_steps=warmup, schedule=schedule, min_lr_ratio=0.1)
    total = 11
    scheduler = create_scheduler(optimizer, spec, total_steps=total)
    for step in range(total + 3):
        factor = reference_factor(step, warmup, total, 0.1, schedule == "cosine")
        lrs = [group["lr"] for group in optimizer.param_groups]
        assert lrs == pytest.approx([0.1 * factor, 0.02 * factor], abs=1e-12), step
        optimizer.step()
        scheduler.step()
    if schedule == "cosine":
        assert lrs == pytest.approx([0.01, 0.002])


def test_scheduler_rejects_bad_settings() -> None:
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(ValueError, match="warmup_steps must be in"):
        create_scheduler(optimizer, OptimSpec(warmup_steps=20), total_steps=10)
    with pytest.raises(ValueError, match="valid names: constant, cosine"):
        create_scheduler(optimizer, OptimSpec(schedule="step"), total_steps=10)
