"""From a training checkpoint to an embedder: ``.ckpt`` -> :class:`Embedder` -> safetensors folder.

A checkpoint of :class:`~lookalike.train.module.RetrievalModule` carries, beside Lightning's
state, the embedder's config, preprocessing and fine-tuning spec (under ``"lookalike"``), so it
rebuilds the exact model alone: architecture with random weights, LoRA adapters re-injected where
the run used them, the trained tensors loaded strictly, adapters merged into the base weights.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch

from lookalike.models.checkpoint import save_embedder
from lookalike.models.embedder import Embedder, create_embedder
from lookalike.models.preprocessing import Preprocessing
from lookalike.train.finetune import FinetuneSpec, apply_finetune, merge_lora
from lookalike.train.module import CHECKPOINT_FORMAT, CHECKPOINT_KEY

logger = logging.getLogger(__name__)

EMBEDDER_PREFIX = "embedder."


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The contents of a training checkpoint (tensors on the CPU, ``weights_only`` loading).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: The file is not a lookalike training checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises pickle, zip and runtime errors for corrupt files
        reason = " ".join(str(exc).split())[:200]
        raise ValueError(f"cannot read checkpoint {path}: {reason}") from exc
    info = checkpoint.get(CHECKPOINT_KEY) if isinstance(checkpoint, dict) else None
    if not isinstance(info, dict) or info.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a lookalike training checkpoint (no model description)")
    return checkpoint


def load_embedder_from_checkpoint(path: str | os.PathLike[str]) -> Embedder:
    """Rebuild the trained embedder of a ``.ckpt`` file, LoRA adapters merged, in eval mode.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: Not a lookalike checkpoint, or its tensors do not fit its described model.
    """
    checkpoint = read_checkpoint(path)
    info = checkpoint[CHECKPOINT_KEY]
    embedder = create_embedder(**info["embedder_config"], weights=None)
    embedder.preprocessing = Preprocessing.from_dict(info["preprocessing"])
    finetune = FinetuneSpec(**info["finetune"])
    if finetune.strategy == "lora":
        apply_finetune(embedder, finetune, epoch=0)
    state = {
        key.removeprefix(EMBEDDER_PREFIX): value
        for key, value in checkpoint["state_dict"].items()
        if key.startswith(EMBEDDER_PREFIX)
    }
    try:
        embedder.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        reason = " ".join(str(exc).split())[:300]
        raise ValueError(f"{path}: weights do not fit the described embedder: {reason}") from exc
    if finetune.strategy == "lora":
        embedder = merge_lora(embedder)
    embedder.requires_grad_(True)
    return embedder.eval()


def export_checkpoint(checkpoint: str | os.PathLike[str], folder: str | os.PathLike[str]) -> Path:
    """Save the embedder of ``checkpoint`` as ``folder/model.safetensors`` + ``embedder.json``
    (:func:`~lookalike.models.checkpoint.save_embedder`), loadable by ``load_embedder``."""
    embedder = load_embedder_from_checkpoint(checkpoint)
    folder = save_embedder(embedder, folder)
    logger.info("exported %s to %s (fingerprint %s)", checkpoint, folder, embedder.fingerprint())
    return folder
