"""What trains and whether gradients reach it: parameter tables and a gradient-flow check.

After the first backward pass, :func:`check_gradient_flow` catches the silent failure of
fine-tuning: blocks set to train whose parameters receive no gradient, because the forward ran
under ``torch.no_grad``/``torch.inference_mode``, features were detached, or frozen features were
cached and reused.
"""

from __future__ import annotations

import logging

from rich.table import Table
from torch import nn

from lookalike.models.embedder import Embedder

logger = logging.getLogger(__name__)

OUTSIDE_BLOCKS = "backbone (outside blocks)"


class GradientFlowError(RuntimeError):
    """Blocks that should train received no gradient."""


def _counts(parameters: list[nn.Parameter]) -> tuple[int, int]:
    trainable = sum(p.numel() for p in parameters if p.requires_grad)
    return trainable, sum(p.numel() for p in parameters)


def trainable_parameter_table(embedder: Embedder, loss: nn.Module | None = None) -> list[dict]:
    """Trainable and total parameter counts, one row per part of the model.

    Returns:
        Rows ``{"block": name, "trainable": int, "total": int}``: each block of
        ``backbone.blocks()`` in order, ``"backbone (outside blocks)"`` when the backbone has
        parameters outside them, then ``"pooling"``, ``"head"`` and, with a ``loss``, ``"loss"``.
    """
    backbone = embedder.backbone
    rows = []
    in_blocks: set[int] = set()
    for name, block in backbone.blocks():
        parameters = list(block.parameters())
        in_blocks.update(id(p) for p in parameters)
        trainable, total = _counts(parameters)
        rows.append({"block": name, "trainable": trainable, "total": total})
    outside = [p for p in backbone.parameters() if id(p) not in in_blocks]
    if outside:
        trainable, total = _counts(outside)
        rows.append({"block": OUTSIDE_BLOCKS, "trainable": trainable, "total": total})
    parts: list[tuple[str, nn.Module]] = [("pooling", embedder.pooling), ("head", embedder.head)]
    if loss is not None:
        parts.append(("loss", loss))
    for name, module in parts:
        trainable, total = _counts(list(module.parameters()))
        rows.append({"block": name, "trainable": trainable, "total": total})
    return rows


def render_parameter_table(rows: list[dict]) -> Table:
    """A rich table of :func:`trainable_parameter_table` rows, with a total line."""
    table = Table(title="Trainable parameters")
    table.add_column("Block")
    table.add_column("Trainable", justify="right")
    table.add_column("Total", justify="right")
    table.add_column("%", justify="right")

    def percent(trainable: int, total: int) -> str:
        return f"{100 * trainable / total:.1f}" if total else "-"

    for row in rows:
        table.add_row(
            row["block"],
            f"{row['trainable']:,}",
            f"{row['total']:,}",
            percent(row["trainable"], row["total"]),
        )
    trainable = sum(row["trainable"] for row in rows)
    total = sum(row["total"] for row in rows)
    table.add_section()
    table.add_row("total", f"{trainable:,}", f"{total:,}", percent(trainable, total))
    return table


def blocks_without_gradient(embedder: Embedder, trainable_blocks: list[str]) -> list[str]:
    """After a backward pass: the blocks in ``trainable_blocks`` whose trainable parameters all
    have no gradient (``None``) or an all-zero one (a block with no trainable parameter counts).

    Raises:
        ValueError: A name is not a block of ``backbone.blocks()``.
    """
    blocks = dict(embedder.backbone.blocks())
    unknown = [name for name in trainable_blocks if name not in blocks]
    if unknown:
        raise ValueError(
            f"not backbone blocks: {', '.join(unknown)}; valid: {', '.join(blocks) or '(none)'}"
        )
    silent = []
    for name in trainable_blocks:
        gradients = [p.grad for p in blocks[name].parameters() if p.requires_grad]
        if all(g is None or not bool(g.detach().ne(0).any()) for g in gradients):
            silent.append(name)
    return silent


def check_gradient_flow(embedder: Embedder, trainable_blocks: list[str]) -> None:
    """Raise :class:`GradientFlowError` when a block set to train got no gradient.

    Call after the first backward pass, with the block names :func:`apply_finetune` returned.
    """
    silent = blocks_without_gradient(embedder, trainable_blocks)
    if silent:
        raise GradientFlowError(
            f"{len(silent)} of {len(trainable_blocks)} trainable blocks got no gradient "
            f"({', '.join(silent)}); check that the forward pass does not run under "
            "torch.no_grad()/torch.inference_mode(), detach the features, or reuse cached "
            "features of a frozen backbone"
        )
    logger.debug("gradients reach all %d trainable blocks", len(trainable_blocks))
