"""Reading a training checkpoint: ``.ckpt`` -> :class:`Embedder`.

A checkpoint of :class:`~lookalike.train.module.RetrievalModule` carries, beside Lightning's
state, the embedder's config, preprocessing and fine-tuning spec (under :data:`CHECKPOINT_KEY`),
so it rebuilds the exact model alone: architecture with random weights, LoRA adapters re-injected
where the run used them, the trained tensors loaded strictly, adapters merged into the base
weights. The trainer writes that description; reading it needs nothing of the trainer.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from lookalike.models.embedder import Embedder, create_embedder
from lookalike.models.lora import (
    DEFAULT_LORA_ALPHA,
    DEFAULT_LORA_DROPOUT,
    DEFAULT_LORA_R,
    add_lora,
    merge_lora,
)
from lookalike.models.preprocessing import Preprocessing

CHECKPOINT_KEY = "lookalike"
"""Key of the model description in a training checkpoint."""
CHECKPOINT_FORMAT = "lookalike-train-checkpoint"
"""``"format"`` of that description."""
EMBEDDER_PREFIX = "embedder."
"""Prefix of the embedder's tensors in the checkpoint's ``state_dict``."""


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
    finetune = info["finetune"]  # the fields of lookalike.train.finetune.FinetuneSpec
    lora = finetune.get("strategy") == "lora"
    if lora:
        add_lora(
            embedder.backbone,
            r=finetune.get("lora_r", DEFAULT_LORA_R),
            alpha=finetune.get("lora_alpha", DEFAULT_LORA_ALPHA),
            dropout=finetune.get("lora_dropout", DEFAULT_LORA_DROPOUT),
            targets=finetune.get("lora_targets"),
        )
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
    if lora:
        embedder = merge_lora(embedder)
    embedder.requires_grad_(True)
    return embedder.eval()
