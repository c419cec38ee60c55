"""Parameter tables and the gradient-flow check."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from rich.console import Console
from torch import nn

from lookalike.losses import create_loss
from lookalike.models import create_embedder
from lookalike.models.embedder import Embedder
from lookalike.train.finetune import FinetuneSpec, apply_finetune
from lookalike.train.inspect import (
    GradientFlowError,
    blocks_without_gradient,
    check_gradient_flow,
    render_parameter_table,
    trainable_parameter_table,
)


def tiny_vit() -> Embedder:
    return create_embedder(
        "timm:vit_tiny_patch16_224", weights=None, head="linear:8", pool="gem", img_size=32,
        patch_size=8, embed_dim=32, depth=3, num_heads=2,
    )  # fmt: skip


def backward(embedder: Embedder) -> None:
    loss = create_loss("arcface", embedding_dim=8, num_classes=3)
    loss(embedder(torch.randn(4, 3, 32, 32)), torch.tensor([0, 1, 2, 0]))["loss"].backward()


def test_parameter_table_counts_every_parameter_once() -> None:
    embedder = tiny_vit()
    loss = create_loss("arcface", embedding_dim=8, num_classes=3)
    apply_finetune(embedder, FinetuneSpec("last_n", last_n=1))
    rows = trainable_parameter_table(embedder, loss)

    def count(module: nn.Module, prefix: str = "") -> int:
        return sum(p.numel() for n, p in module.named_parameters() if n.startswith(prefix))

    backbone = embedder.backbone
    blocks = {f"model.blocks.{i}": count(backbone, f"model.blocks.{i}.") for i in range(3)}
    outside = count(backbone) - sum(blocks.values())
    expected = [
        {"block": "model.blocks.0", "trainable": 0, "total": blocks["model.blocks.0"]},
        {"block": "model.blocks.1", "trainable": 0, "total": blocks["model.blocks.1"]},
        {"block": "model.blocks.2", "trainable": blocks["model.blocks.2"],
         "total": blocks["model.blocks.2"]},
        {"block": "backbone (outside blocks)", "trainable": 0, "total": outside},
        {"block": "pooling", "trainable": 1, "total": 1},
        {"block": "head", "trainable": count(embedder.head), "total": count(embedder.head)},
        {"block": "loss", "trainable": 8 * 3, "total": 8 * 3},
    ]  # fmt: skip
    assert rows == expected
    assert outside > 0


def test_rendered_table_has_a_row_per_part_and_a_total() -> None:
    embedder = tiny_vit()
    apply_finetune(embedder, FinetuneSpec("frozen"))
    rows = trainable_parameter_table(embedder)
    table = render_parameter_table(rows)
    assert table.row_count == len(rows) + 1
    console = Console(width=120, record=True)
    console.print(table)
    text = console.export_text()
    total = sum(p.numel() for p in embedder.parameters())
    trainable = sum(p.numel() for p in embedder.parameters() if p.requires_grad)
    assert f"{total:,}" in text and f"{trainable:,}" in text
    assert "model.blocks.2" in text


def no_grad_forward(module: nn.Module) -> None:
    forward = module.forward

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        with torch.no_grad():
            return forward(*args, **kwargs)

    module.forward = wrapped  # type: ignore[method-assign]


def test_gradient_flow_passes_when_gradients_reach_every_block() -> None:
    embedder = tiny_vit()
    trainable = apply_finetune(embedder, FinetuneSpec("full"))
    backward(embedder)
    assert blocks_without_gradient(embedder, trainable) == []
    check_gradient_flow(embedder, trainable)


@pytest.mark.parametrize(
    ("cut", "silent"),
    [
        (lambda e: no_grad_forward(e.backbone.model.blocks[1]),
         ["model.blocks.0", "model.blocks.1"]),
        (lambda e: no_grad_forward(e.backbone), ["model.blocks.0", "model.blocks.1",
                                                 "model.blocks.2"]),
    ],
    ids=["one-block-under-no-grad", "backbone-under-no-grad"],
)  # fmt: skip
def test_gradient_flow_names_the_blocks_cut_off(
    cut: Callable[[Embedder], None], silent: list[str]
) -> None:
    embedder = tiny_vit()
    trainable = apply_finetune(embedder, FinetuneSpec("full"))
    cut(embedder)
    backward(embedder)
    assert blocks_without_gradient(embedder, trainable) == silent
    pattern = rf"got no gradient \({', '.join(silent)}\).*no_grad"
    with pytest.raises(GradientFlowError, match=pattern):
        check_gradient_flow(embedder, trainable)


def test_all_zero_gradients_count_as_none() -> None:
    embedder = tiny_vit()
    trainable = apply_finetune(embedder, FinetuneSpec("last_n", last_n=2))
    backward(embedder)
    for parameter in embedder.backbone.model.blocks[2].parameters():
        parameter.grad.zero_()
    assert blocks_without_gradient(embedder, trainable) == ["model.blocks.2"]
    assert issubclass(GradientFlowError, RuntimeError)


def test_unknown_block_names_are_rejected() -> None:
    with pytest.raises(ValueError, match="not backbone blocks: blocks.9; valid: model.blocks.0"):
        blocks_without_gradient(tiny_vit(), ["blocks.9"])
