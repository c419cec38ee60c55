"""Text embeddings in a CLIP model's image space: texts -> ``(B, D)`` rows that find images.

CLIP (Radford et al., "Learning Transferable Visual Models From Natural Language Supervision",
ICML 2021) trains an image tower and a text tower into one space. An embedder whose output is
CLIP's image embedding unchanged (an open_clip backbone, its own CLS/pooled embedding, no head)
therefore embeds text with ``encode_text`` of the same model: :func:`text_support` says whether
an embedder does, :func:`embed_texts` runs the text tower, normalising as the embedder does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from lookalike.models.embedder import Embedder

_CLIP_POOLINGS = ("cls", "identity")


def text_support(embedder: Embedder) -> str | None:
    """None when ``embedder`` can embed text into its image space; else why it cannot."""
    backbone = getattr(embedder, "backbone", None)  # an ONNX export has no torch backbone
    if getattr(backbone, "text_model", None) is None or not hasattr(backbone, "tokenizer"):
        return (
            f"the model ({getattr(embedder, 'config', {}).get('backbone', 'unknown')}) has no "
            "text tower; "
            "text embeddings need an open_clip backbone with its text tower "
            "(e.g. --model open_clip:ViT-B-32/openai)"
        )
    if embedder.config.get("head", "none") != "none":
        return "the model's head maps images out of CLIP's text space; text needs head 'none'"
    if embedder.config.get("pool") not in _CLIP_POOLINGS:
        return (
            f"the model pools with {embedder.config.get('pool')!r}, not CLIP's own image "
            "embedding; text needs pool 'cls' or 'auto'"
        )
    return None


def encode_text_batch(
    tower: Any, tokenizer: Any, texts: list[str], device: str | torch.device, normalize: bool
) -> np.ndarray:
    """One forward pass of a CLIP text tower: ``B`` texts -> ``(B, D)`` float32 rows,
    L2-normalised when ``normalize``."""
    with torch.inference_mode():
        rows = tower.encode_text(tokenizer(texts).to(device)).float()
        if normalize:
            rows = F.normalize(rows, dim=-1)
    return rows.cpu().numpy()


def embed_texts(
    embedder: Embedder,
    texts: Sequence[str],
    *,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """``T`` texts -> ``(T, D)`` float32 embeddings from the embedder's CLIP text tower.

    Rows are L2-normalised when the embedder normalises its image embeddings, so text and image
    rows compare under the same metric.

    Args:
        embedder: An embedder for which :func:`text_support` returns None.
        texts: The texts (CLIP's tokenizer truncates each to its context length).
        batch_size: Texts per forward pass.
        device: Where the text tower runs.
        progress: Called with the number of texts done after each batch.

    Raises:
        ValueError: The embedder has no usable text tower (the reason is given), or
            ``batch_size < 1``.
    """
    reason = text_support(embedder)
    if reason is not None:
        raise ValueError(reason)
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    backbone = embedder.backbone
    tower = backbone.text_model
    tokenizer = backbone.tokenizer
    was_training = tower.training
    tower.eval().to(device)
    parts: list[np.ndarray] = []
    try:
        for start in range(0, len(texts), batch_size):
            batch = list(texts[start : start + batch_size])
            parts.append(encode_text_batch(tower, tokenizer, batch, device, embedder.normalize))
            if progress is not None:
                progress(len(batch))
    finally:
        tower.train(was_training)
    if not parts:
        return np.zeros((0, embedder.embedding_dim), dtype=np.float32)
    return np.concatenate(parts).astype(np.float32, copy=False)
