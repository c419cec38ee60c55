"""Saving and loading embedders: ``model.safetensors`` + ``embedder.json`` in one folder.

``embedder.json`` holds the config that rebuilds the architecture, the preprocessing and the
fingerprint; :func:`load_embedder` rebuilds with random weights (no network), loads the tensors
strictly and checks the fingerprint, so a saved model re-embeds with exactly the same transform
and outputs.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from lookalike.models.embedder import Embedder, create_embedder
from lookalike.models.preprocessing import Preprocessing
from lookalike.models.training_checkpoint import load_embedder_from_checkpoint
from lookalike.utils.atomic import atomic_path, atomic_write_json

logger = logging.getLogger(__name__)

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "embedder.json"
FORMAT = "lookalike-embedder"
FORMAT_VERSION = 1


def save_embedder(embedder: Embedder, folder: str | os.PathLike[str]) -> Path:
    """Write ``folder/model.safetensors`` and ``folder/embedder.json`` atomically.

    The weights are written first and the JSON last, so a folder with an ``embedder.json`` always
    has the weights it describes.

    Returns:
        The folder.
    """
    from safetensors.torch import save_model

    folder = Path(folder)
    with atomic_path(folder / WEIGHTS_FILE) as tmp:
        save_model(embedder, str(tmp))
    atomic_write_json(
        folder / CONFIG_FILE,
        {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "config": embedder.config,
            "preprocessing": embedder.preprocessing.to_dict(),
            "embedding_dim": embedder.embedding_dim,
            "fingerprint": embedder.fingerprint(),
        },
    )
    logger.info("saved embedder %s to %s", embedder.fingerprint(), folder)
    return folder


def read_embedder_info(folder_or_file: str | os.PathLike[str]) -> dict[str, Any]:
    """The parsed ``embedder.json`` of a saved embedder (config, preprocessing, fingerprint)."""
    config_path = _folder(folder_or_file) / CONFIG_FILE
    if not config_path.is_file():
        raise FileNotFoundError(
            f"{config_path} does not exist; is this a folder save_embedder wrote?"
        )
    try:
        info = json.loads(config_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{config_path} is not valid JSON: {exc}") from exc
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise ValueError(f"{config_path} is not a lookalike embedder description")
    missing = [key for key in ("config", "preprocessing", "fingerprint") if key not in info]
    if missing:
        raise ValueError(f"{config_path} lacks {', '.join(missing)}")
    return info


def load_embedder(folder_or_file: str | os.PathLike[str]) -> Embedder:
    """Rebuild a saved embedder from its folder (or either of its two files), or from a
    ``lookalike train`` checkpoint (``.ckpt``).

    Raises:
        FileNotFoundError: A file is missing.
        ValueError: A file is corrupt, or the weights do not fit the described architecture.
    """
    from safetensors.torch import load_model

    if Path(folder_or_file).suffix == ".ckpt":
        # a training checkpoint carries its model description
        return load_embedder_from_checkpoint(folder_or_file)
    folder = _folder(folder_or_file)
    info = read_embedder_info(folder)
    weights_path = folder / WEIGHTS_FILE
    if not weights_path.is_file():
        raise FileNotFoundError(f"{weights_path} does not exist; the saved embedder is incomplete")
    config = dict(info["config"])
    try:
        preprocessing = Preprocessing.from_dict(info["preprocessing"])
        embedder = create_embedder(**config, weights=None)
    except (KeyError, TypeError) as exc:
        raise ValueError(f"{folder / CONFIG_FILE} describes no buildable embedder: {exc}") from exc
    embedder.preprocessing = preprocessing
    try:
        missing, unexpected = load_model(embedder, str(weights_path), strict=False)
    except Exception as exc:  # safetensors raises its own error types on corrupt headers
        reason = " ".join(str(exc).split())
        raise ValueError(
            f"cannot load {weights_path} into the described embedder: {reason}"
        ) from exc
    if missing or unexpected:
        raise ValueError(
            f"cannot load {weights_path} into the described embedder: "
            f"missing keys {sorted(missing)[:3]} ({len(missing)}), "
            f"unexpected keys {sorted(unexpected)[:3]} ({len(unexpected)})"
        )
    embedder.eval()
    fingerprint = embedder.fingerprint()
    if fingerprint != info["fingerprint"]:
        raise ValueError(
            f"{weights_path}: fingerprint {fingerprint} differs from the saved "
            f"{info['fingerprint']}; "
            "the files do not belong together or were modified"
        )
    return embedder


def _folder(folder_or_file: str | os.PathLike[str]) -> Path:
    path = Path(folder_or_file)
    if path.name in (WEIGHTS_FILE, CONFIG_FILE):
        return path.parent
    if not path.exists():
        raise FileNotFoundError(f"saved embedder {path} does not exist")
    return path
