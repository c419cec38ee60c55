"""Weight-space ensembling of a fine-tuned model with its pre-trained start (WiSE-FT).

Wortsman et al., "Robust fine-tuning of zero-shot models", CVPR 2022: fine-tuning gains on the
target distribution but loses robustness elsewhere; the linear interpolation of the weights

    theta(alpha) = (1 - alpha) * theta_pretrained + alpha * theta_finetuned

keeps much of both, for one model's cost at inference. ``alpha = 0`` is the pre-trained model,
``alpha = 1`` the fine-tuned one. Every floating-point tensor of the state dict is interpolated
(BatchNorm running statistics included); integer buffers (``num_batches_tracked``) are the
fine-tuned model's.
"""

from __future__ import annotations

import copy
import math

import torch

from lookalike.models.embedder import Embedder


def interpolate_state(
    pretrained: dict[str, torch.Tensor], finetuned: dict[str, torch.Tensor], alpha: float
) -> dict[str, torch.Tensor]:
    """``(1 - alpha) * pretrained + alpha * finetuned`` for each floating-point tensor.

    Raises:
        ValueError: ``alpha`` outside ``[0, 1]``, or state dicts with different keys or shapes.
    """
    if not (math.isfinite(alpha) and 0.0 <= alpha <= 1.0):
        raise ValueError(f"the WiSE-FT mixing coefficient alpha must lie in [0, 1], got {alpha}")
    if pretrained.keys() != finetuned.keys():
        only = sorted(set(pretrained) ^ set(finetuned))
        raise ValueError(
            f"the two models have different tensors ({', '.join(only[:3])} ...): WiSE-FT needs "
            "one architecture"
        )
    mixed = {}
    for name, tuned in finetuned.items():
        start = pretrained[name]
        if start.shape != tuned.shape:
            raise ValueError(
                f"tensor {name} is {tuple(start.shape)} in one model and {tuple(tuned.shape)} in "
                "the other: WiSE-FT needs one architecture"
            )
        if tuned.is_floating_point():
            mixed[name] = torch.lerp(start.to(tuned.dtype), tuned, alpha)
        else:
            mixed[name] = tuned.clone()
    return mixed


def wise_ft(pretrained: Embedder, finetuned: Embedder, alpha: float) -> Embedder:
    """A copy of ``finetuned`` whose weights are ``theta(alpha)``, in eval mode.

    Args:
        pretrained: The model fine-tuning started from (same architecture: equal ``config``).
        finetuned: The fine-tuned model; its preprocessing is kept.
        alpha: Mixing coefficient in ``[0, 1]`` (1 = fine-tuned).

    Raises:
        ValueError: The models' architectures differ, or ``alpha`` is out of range.
    """
    if pretrained.config != finetuned.config:
        raise ValueError(
            "WiSE-FT needs two models of one architecture; their configs differ: "
            f"{pretrained.config} vs {finetuned.config}"
        )
    mixed = copy.deepcopy(finetuned)
    state = interpolate_state(pretrained.state_dict(), finetuned.state_dict(), alpha)
    mixed.load_state_dict(state, strict=True)
    return mixed.eval()
