"""From a training checkpoint to a saved embedder: ``.ckpt`` -> :class:`Embedder` -> safetensors
folder.

Reading the checkpoint (:func:`~lookalike.models.training_checkpoint.load_embedder_from_checkpoint`)
lives with the models, so ``load_embedder`` reads ``.ckpt`` files without the trainer.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from lookalike.models.checkpoint import save_embedder
from lookalike.models.training_checkpoint import load_embedder_from_checkpoint

logger = logging.getLogger(__name__)


def export_checkpoint(checkpoint: str | os.PathLike[str], folder: str | os.PathLike[str]) -> Path:
    """Save the embedder of ``checkpoint`` as ``folder/model.safetensors`` + ``embedder.json``
    (:func:`~lookalike.models.checkpoint.save_embedder`), loadable by ``load_embedder``."""
    embedder = load_embedder_from_checkpoint(checkpoint)
    folder = save_embedder(embedder, folder)
    logger.info("exported %s to %s (fingerprint %s)", checkpoint, folder, embedder.fingerprint())
    return folder
