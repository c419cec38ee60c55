"""Reading a training checkpoint: ``.ckpt`` -> :class:`Embedder`.

A checkpoint of :class:`~lookalike.train.module.RetrievalModule` carries, beside Lightning's
state, the embedder's config, preprocessing and fine-tuning spec (under :data:`CHECKPOINT_KEY`),
so it rebuilds the exact model alone: architecture with random weights, LoRA adapters re-injected
where the run used them, the trained tensors loaded strictly, adapters merged into the base
weights. The trainer writes that description; reading it needs nothing of the trainer.
"""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path
from typing import Any

import torch

from lookalike.models.classifier import Classifier
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
CLASSIFIER_KEY = "classifier"
"""Key, in the model description, of the trained classifier: ``{"description", "state"}``."""


def load_checkpoint_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A ``.ckpt`` file's dict, tensors on the CPU, read with ``weights_only=True``.

    ``weights_only=True`` is passed explicitly, so ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` cannot
    turn it off: a planted checkpoint whose pickle would run code is refused, not executed.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: One line naming ``path``: the file is truncated or damaged, holds Python
            objects other than tensors and plain values, or is not a dict.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        # weights_only refuses both a pickled callable and bytes that are no pickle at all.
        blocked = re.search(r"GLOBAL (\S+)", str(error))
        if blocked:
            raise ValueError(
                f"refusing checkpoint {path}: it holds Python objects ({blocked.group(1)}) whose "
                "loading could run code"
            ) from None
        raise ValueError(
            f"refusing checkpoint {path}: damaged, or not only tensors and plain values (loading "
            "anything else could run code)"
        ) from None
    except Exception as error:  # noqa: BLE001 - torch raises zip, EOF, runtime ... errors alike
        raise ValueError(f"cannot read checkpoint {path}: damaged ({_first_line(error)})") from None
    if not isinstance(checkpoint, dict):
        raise ValueError(  # noqa: TRY004 - a user's file, reported like any other bad input
            f"cannot read checkpoint {path}: it holds a {type(checkpoint).__name__}, not a dict"
        )
    return checkpoint


def _first_line(error: Exception) -> str:
    """``Type: first sentence`` of an error, for a one-line message."""
    text = str(error).strip().splitlines()
    sentence = text[0].split(". ")[0][:160] if text else ""
    return f"{type(error).__name__}: {sentence}" if sentence else type(error).__name__


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The contents of a training checkpoint (tensors on the CPU, ``weights_only`` loading).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: The file is not a lookalike training checkpoint.
    """
    checkpoint = load_checkpoint_file(path)
    info = checkpoint.get(CHECKPOINT_KEY)
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
            first_block=finetune.get("lora_first_block", 0),
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


def load_classifier_from_checkpoint(path: str | os.PathLike[str]) -> Classifier | None:
    """The classifier a training checkpoint keeps beside its embedder (the loss's class weights
    as a :class:`~lookalike.models.classifier.Classifier`), ``None`` when the loss had none.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: Not a lookalike checkpoint, or a classifier entry that does not load.
    """
    stored = read_checkpoint(path)[CHECKPOINT_KEY].get(CLASSIFIER_KEY)
    if stored is None:
        return None
    try:
        classifier = Classifier.from_description(stored["description"])
        classifier.load_state_dict(stored["state"], strict=True)
    except (KeyError, TypeError, RuntimeError) as exc:
        reason = " ".join(str(exc).split())[:300]
        raise ValueError(f"{path}: the stored classifier does not load: {reason}") from None
    return classifier.eval()

