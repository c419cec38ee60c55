"""The loss of a DDP step computed over the global batch, as one process would compute it.

Under DDP each process embeds its slice of the global batch (:class:`~lookalike.train.sampler.
EpochSampler` gives rank ``r`` the ``r``-th slice). A loss that couples the rows of a batch
(pairs, triplets, multi-similarity, NT-Xent, SupCon, ProxyAnchor ...) computed on a slice alone is
not the loss of the global batch, so every process gathers every rank's rows, in rank order, and
computes the loss of the whole batch, as pytorch-metric-learning's ``DistributedLossWrapper``
does (after DeCLUTR, Giorgi et al. 2021): only the local rows carry a gradient.

pml's wrapper then multiplies the loss by the world size, which also multiplies the gradient of
the loss's own parameters (ArcFace's centres, ProxyAnchor's proxies, CLIP's temperature) by it.
Here the factor is put on the gradient of the local rows only (:class:`_ScaleGradient`): every
process computes the same loss, so DDP's averaging leaves the parameters' gradient as is and
sums the rows' gradients across processes, which is the single-process gradient.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


def world_size() -> int:
    """Processes of the initialised process group (1 without one)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


class _ScaleGradient(torch.autograd.Function):
    """Identity forward; the backward multiplies the gradient by ``scale``."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, rows: Tensor, scale: float) -> Tensor:
        ctx.scale = scale  # type: ignore[attr-defined]
        return rows.view_as(rows)

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx, gradient: Tensor
    ) -> tuple[Tensor, None]:
        return gradient * ctx.scale, None  # type: ignore[attr-defined]


def gather_rows(local: Tensor) -> Tensor:
    """Every rank's rows of a batch tensor, in rank order; this rank's rows keep their gradient.

    Ranks may hold different numbers of rows (a batch that lost an unreadable image): rows are
    padded to the largest count for ``all_gather`` and the padding is dropped.

    Args:
        local: ``(B_r, ...)`` this process's rows (embeddings, or labels without gradient).

    Returns:
        ``(sum_r B_r, ...)``; ``local`` itself when there is no process group. Under DDP the
        gradient reaching ``local`` is multiplied by the world size (see the module docstring).
    """
    size = world_size()
    if size == 1:
        return local
    count = torch.tensor([local.shape[0]], device=local.device)
    counts = [torch.zeros_like(count) for _ in range(size)]
    dist.all_gather(counts, count)
    sizes = [int(c.item()) for c in counts]
    padded = local.detach()
    if local.shape[0] < max(sizes):
        filler = padded.new_zeros((max(sizes) - local.shape[0], *local.shape[1:]))
        padded = torch.cat([padded, filler])
    parts = [torch.empty_like(padded) for _ in range(size)]
    dist.all_gather(parts, padded.contiguous())
    rank = dist.get_rank()
    own = _ScaleGradient.apply(local, float(size)) if local.requires_grad else local
    return torch.cat(
        [own if r == rank else part[: sizes[r]] for r, part in enumerate(parts)]
    )


def gather_optional(local: Tensor | None) -> Tensor | None:
    """:func:`gather_rows` of a tensor that may be absent (``None`` on every rank)."""
    return None if local is None else gather_rows(local)
