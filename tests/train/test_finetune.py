"""Fine-tuning strategies: one optimiser step changes exactly the parameters each one trains."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lookalike.losses import create_loss
from lookalike.models import create_embedder
from lookalike.models.embedder import Embedder
from lookalike.train.finetune import (
    FINETUNE_STRATEGIES,
    FinetuneSpec,
    apply_finetune,
    set_frozen_eval,
)

BLOCKS = ["model.blocks.0", "model.blocks.1", "model.blocks.2"]


def tiny_vit() -> Embedder:
    return create_embedder(
        "timm:vit_tiny_patch16_224", weights=None, head="linear:8", img_size=32, patch_size=8,
        embed_dim=32, depth=3, num_heads=2,
    )  # fmt: skip


def tiny_cnn() -> Embedder:
    return create_embedder("timm:test_efficientnet", weights=None, head="linear:8")


def step(embedder: Embedder, spec: FinetuneSpec, epoch: int = 0) -> tuple[list[str], set[str]]:
    """apply_finetune, then one SGD step on an ArcFace loss; returns the trainable blocks and
    the embedder state-dict keys whose tensors changed."""
    blocks = apply_finetune(embedder, spec, epoch)
    loss = create_loss("arcface", embedding_dim=8, num_classes=3)
    embedder.train()
    set_frozen_eval(embedder)
    before = {k: v.clone() for k, v in embedder.state_dict().items()}
    trainable = [p for p in [*embedder.parameters(), *loss.parameters()] if p.requires_grad]
    optimizer = torch.optim.SGD(trainable, lr=0.5)
    images = torch.randn(4, 3, 32, 32)
    loss(embedder(images), torch.tensor([0, 1, 2, 0]))["loss"].backward()
    optimizer.step()
    after = embedder.state_dict()
    return blocks, {k for k in before if not torch.equal(before[k], after[k])}


def keys(embedder: Embedder, *prefixes: str) -> set[str]:
    return {k for k, _ in embedder.named_parameters() if k.startswith(prefixes)}


HEAD = ("head.",)


def test_frozen_trains_only_the_head() -> None:
    embedder = tiny_vit()
    blocks, changed = step(embedder, FinetuneSpec("frozen"))
    assert blocks == []
    assert changed == keys(embedder, *HEAD) != set()


def test_full_trains_everything() -> None:
    embedder = tiny_vit()
    blocks, changed = step(embedder, FinetuneSpec("full"))
    assert blocks == BLOCKS
    assert changed == set(embedder.state_dict())


@pytest.mark.parametrize("last_n", [1, 2])
def test_last_n_trains_exactly_the_last_blocks(last_n: int) -> None:
    embedder = tiny_vit()
    blocks, changed = step(embedder, FinetuneSpec("last_n", last_n=last_n))
    expected_blocks = BLOCKS[-last_n:]
    assert blocks == expected_blocks
    assert changed == keys(embedder, *HEAD, *(f"backbone.{b}." for b in expected_blocks))


def test_last_n_beyond_the_block_count_trains_all_blocks() -> None:
    embedder = tiny_vit()
    blocks, changed = step(embedder, FinetuneSpec("last_n", last_n=10))
    assert blocks == BLOCKS
    assert changed == keys(embedder, *HEAD, "backbone.model.blocks.")


@pytest.mark.parametrize(
    ("last_n", "unfrozen"), [(0, ("backbone.",)), (1, ("backbone.model.blocks.2.",))]
)
def test_freeze_then_unfreeze_switches_at_unfreeze_epoch(
    last_n: int, unfrozen: tuple[str, ...]
) -> None:
    embedder = tiny_vit()
    spec = FinetuneSpec("freeze_then_unfreeze", unfreeze_epoch=2, last_n=last_n)
    for epoch in (0, 1):
        blocks, changed = step(embedder, spec, epoch)
        assert blocks == []
        assert changed == keys(embedder, *HEAD)
    for epoch in (2, 3):
        blocks, changed = step(embedder, spec, epoch)
        assert blocks == (BLOCKS if last_n == 0 else BLOCKS[-1:])
        assert changed == keys(embedder, *HEAD, *unfrozen)


def test_train_norm_layers_keeps_frozen_norms_training() -> None:
    embedder = tiny_vit()
    _, changed = step(embedder, FinetuneSpec("frozen", train_norm_layers=True))
    norms = {
        f"{name}.{p}"
        for name, module in embedder.named_modules()
        if isinstance(module, nn.LayerNorm)
        for p in ("weight", "bias")
    }
    assert len(norms) == 2 * (2 * 3 + 1)  # norm1, norm2 per block and the final norm
    assert changed == keys(embedder, *HEAD) | norms


def test_frozen_batchnorm_layers_stay_in_eval_and_keep_their_statistics() -> None:
    embedder = tiny_cnn()
    last = embedder.backbone.blocks()[-1][0]
    _, changed = step(embedder, FinetuneSpec("last_n", last_n=1))
    batch_norms = {
        name: module
        for name, module in embedder.named_modules()
        if isinstance(module, nn.BatchNorm2d)
    }
    inside = {name for name in batch_norms if name.startswith(f"backbone.{last}.")}
    assert inside and set(batch_norms) - inside
    for name, module in batch_norms.items():
        assert module.training == (name in inside), name
    # Running statistics move only in the trainable block; frozen ones are bit-identical.
    moved = {k.rsplit(".", 1)[0] for k in changed if k.endswith("running_mean")}
    assert moved == inside
    assert changed - {k for k in changed if k.startswith(f"backbone.{last}.")} == keys(
        embedder, *HEAD
    )


def test_train_norm_layers_keeps_batchnorm_in_training_mode() -> None:
    embedder = tiny_cnn()
    step(embedder, FinetuneSpec("frozen", train_norm_layers=True))
    assert all(
        module.training for module in embedder.modules() if isinstance(module, nn.BatchNorm2d)
    )


def test_unknown_strategy_lists_the_valid_names() -> None:
    with pytest.raises(ValueError, match="freeze_then_unfreeze, frozen, full, last_n, lora"):
        apply_finetune(tiny_vit(), FinetuneSpec("partial"))
    assert FINETUNE_STRATEGIES.names() == [
        "freeze_then_unfreeze", "frozen", "full", "last_n", "lora"
    ]  # fmt: skip


@pytest.mark.parametrize(
    "spec",
    [
        FinetuneSpec("last_n", last_n=0),
        FinetuneSpec("freeze_then_unfreeze", unfreeze_epoch=-1),
        FinetuneSpec("lora", lora_r=0),
    ],
)
def test_bad_options_are_rejected(spec: FinetuneSpec) -> None:
    with pytest.raises(ValueError, match="must be >= "):
        apply_finetune(tiny_vit(), spec, epoch=0)


def test_lora_on_a_cnn_names_the_strategies_that_work() -> None:
    embedder = tiny_cnn()
    before = set(embedder.state_dict())
    with pytest.raises(ValueError, match="use one of freeze_then_unfreeze, frozen, full, last_n"):
        apply_finetune(embedder, FinetuneSpec("lora"))
    assert set(embedder.state_dict()) == before


def test_freeze_batchnorm_keeps_statistics_and_weights_in_trainable_blocks() -> None:
    import torch

    from lookalike.models import create_embedder
    from lookalike.train.finetune import FinetuneSpec, apply_finetune, set_frozen_eval

    embedder = create_embedder("timm:resnet18", pool="gap", weights=None)
    spec = FinetuneSpec(strategy="last_n", last_n=1, freeze_batchnorm=True)
    apply_finetune(embedder, spec)
    before = {k: v.clone() for k, v in embedder.state_dict().items()}
    embedder.train()
    set_frozen_eval(embedder)
    optimizer = torch.optim.SGD([p for p in embedder.parameters() if p.requires_grad], lr=0.1)
    embedder(torch.randn(4, 3, 32, 32) * 3 + 1).sum().backward()
    optimizer.step()
    after = embedder.state_dict()
    batchnorm = [k for k in before if ".bn" in k or "downsample.1" in k]
    # timm zero-initialises each block's last BN scale, so the shortcut conv is what moves here.
    convs = [k for k in before if "layer4" in k and k.endswith("weight") and k not in batchnorm]
    assert batchnorm and all(torch.equal(before[k], after[k]) for k in batchnorm)
    assert convs and any(not torch.equal(before[k], after[k]) for k in convs)
