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
from lookalike.models.classifier import model_classifier_folder, save_classifier
from lookalike.models.training_checkpoint import (
    load_classifier_from_checkpoint,
    load_embedder_from_checkpoint,
)

logger = logging.getLogger(__name__)


def export_checkpoint(checkpoint: str | os.PathLike[str], folder: str | os.PathLike[str]) -> Path:
    """Save the embedder of ``checkpoint`` as ``folder/model.safetensors`` + ``embedder.json``
    (:func:`~lookalike.models.checkpoint.save_embedder`), loadable by ``load_embedder``; a
    classifier the checkpoint keeps (the loss's class weights) goes to ``folder/classifier``
    (:func:`~lookalike.models.classifier.save_classifier`), tied to the embedder's fingerprint."""
    embedder = load_embedder_from_checkpoint(checkpoint)
    folder = save_embedder(embedder, folder)
    classifier = load_classifier_from_checkpoint(checkpoint)
    if classifier is not None:
        save_classifier(classifier, model_classifier_folder(folder), embedder.fingerprint())
    logger.info("exported %s to %s (fingerprint %s)", checkpoint, folder, embedder.fingerprint())
    return folder
