"""Queries to embeddings: images through the embedder, text through a CLIP model's text tower.

:class:`ImageEncoder` prepares each image with the embedder's own evaluation transform (the one
that embedded the gallery) and embeds a list of prepared images in one forward pass.
:class:`TextEncoder` does the same for texts with the text tower of an open_clip backbone
(Radford et al., "Learning Transferable Visual Models From Natural Language Supervision", ICML
2021): CLIP's text embedding lies in the space of its image embedding, so text finds images.
That holds only when the embedder passes CLIP's image embedding on unchanged (CLS or pooled
output, no head); :func:`text_support` says whether it does, and why not.
"""

from __future__ import annotations

import threading

import numpy as np
import torch
from PIL import Image

from lookalike.models.embedder import Embedder
from lookalike.models.text import encode_text_batch
from lookalike.models.text import text_support as model_text_support


class ImageEncoder:
    """RGB images -> ``(B, D)`` float32 embeddings, as :func:`~lookalike.embed` makes them.

    Args:
        embedder: The model that embedded the gallery (put in eval mode on ``device``).
        device: Where it runs.
    """

    def __init__(self, embedder: Embedder, device: torch.device) -> None:
        self.embedder = embedder.eval().to(device)
        self.device = device
        self.transform = embedder.eval_transform()
        self.dim = embedder.embedding_dim
        self._lock = threading.Lock()  # one forward pass at a time on a shared module

    def prepare(self, image: Image.Image) -> torch.Tensor:
        """One RGB image -> its ``(3, S, S)`` input tensor (thread-safe; runs off the loop)."""
        return self.transform(image)

    def __call__(self, prepared: list[torch.Tensor]) -> np.ndarray:
        """``B`` prepared images -> ``(B, D)`` float32 embeddings in one forward pass."""
        batch = torch.stack(prepared).to(self.device)
        with self._lock, torch.inference_mode():
            rows = self.embedder(batch).float()
        return rows.cpu().numpy()


def text_support(embedder: Embedder | None) -> str | None:
    """None when the server's ``embedder`` can embed text into its image space; else why not
    (see :func:`lookalike.models.text.text_support`)."""
    if embedder is None:
        return "the server has no model; start it with --model or --checkpoint"
    return model_text_support(embedder)


class TextEncoder:
    """Texts -> ``(B, D)`` float32 embeddings from a CLIP text tower, L2-normalised.

    Args:
        embedder: An embedder for which :func:`text_support` returns None.
        device: Where the text tower runs.
    """

    def __init__(self, embedder: Embedder, device: torch.device) -> None:
        reason = text_support(embedder)
        if reason is not None:
            raise ValueError(reason)
        backbone = embedder.backbone
        self.text_model = backbone.text_model.eval().to(device)  # type: ignore[union-attr]
        self.tokenizer = backbone.tokenizer
        self.device = device
        self.normalize = embedder.normalize
        self._lock = threading.Lock()

    def __call__(self, texts: list[str]) -> np.ndarray:
        """``B`` texts -> ``(B, D)`` embeddings in one forward pass of the text tower."""
        with self._lock:
            return encode_text_batch(
                self.text_model, self.tokenizer, texts, self.device, self.normalize
            )
