"""Saving and loading embedders: a model folder.

::

    model.safetensors   the weights
    embedder.json       the config that rebuilds the architecture, the preprocessing, the
                        fingerprint
    manifest.json       kind "model", size and SHA-256 of both files, the fingerprint; written last

The folder is built beside its target and swapped in whole (:mod:`lookalike.utils.folders`).
:func:`load_embedder` verifies the manifest, rebuilds with random weights (no network), loads the
tensors strictly and checks the fingerprint, so a saved model re-embeds with exactly the same
transform and outputs.
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
from lookalike.utils.folders import (
    ArtefactError,
    atomic_folder,
    check_replaceable,
    verify_folder,
    write_manifest,
)
from lookalike.utils.readers import read_json_object

logger = logging.getLogger(__name__)

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "embedder.json"
FORMAT = "lookalike-embedder"
FORMAT_VERSION = 1
MODEL_KIND = "model"
_RESAVE = "save or export the model again"


def save_embedder(embedder: Embedder, folder: str | os.PathLike[str]) -> Path:
    """Write ``folder/model.safetensors``, ``folder/embedder.json`` and the manifest, swapped in
    whole.

    Returns:
        The folder.

    Raises:
        ArtefactError: ``folder`` holds something other than a saved model.
    """
    from safetensors.torch import save_model

    folder = Path(folder)
    check_replaceable(folder, MODEL_KIND, (CONFIG_FILE,))
    fingerprint = embedder.fingerprint()
    with atomic_folder(folder) as build:
        save_model(embedder, str(build / WEIGHTS_FILE))
        description = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "config": embedder.config,
            "preprocessing": embedder.preprocessing.to_dict(),
            "embedding_dim": embedder.embedding_dim,
            "fingerprint": fingerprint,
        }
        (build / CONFIG_FILE).write_text(json.dumps(description, indent=2, sort_keys=True) + "\n")
        write_manifest(build, MODEL_KIND, fingerprint)
    logger.info("saved embedder %s to %s", fingerprint, folder)
    return folder


def read_embedder_info(folder_or_file: str | os.PathLike[str]) -> dict[str, Any]:
    """The parsed ``embedder.json`` of a saved embedder (config, preprocessing, fingerprint),
    after verifying the folder's manifest.

    Raises:
        FileNotFoundError: The folder does not exist.
        ArtefactError: The folder is unfinished or damaged, or ``embedder.json`` is not an
            embedder description (one line naming the file).
    """
    folder = _folder(folder_or_file)
    verify_folder(folder, MODEL_KIND)
    config_path = folder / CONFIG_FILE
    info = read_json_object(config_path, _RESAVE)
    if info.get("format") != FORMAT:
        raise ArtefactError(f"{config_path} is not a lookalike embedder description; {_RESAVE}")
    missing = [key for key in ("config", "preprocessing", "fingerprint") if key not in info]
    if missing:
        raise ArtefactError(f"{config_path} lacks {', '.join(missing)}; {_RESAVE}")
    if not isinstance(info["config"], dict) or not isinstance(info["preprocessing"], dict):
        raise ArtefactError(f"{config_path}: config and preprocessing must be objects; {_RESAVE}")
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
    config = dict(info["config"])
    try:
        preprocessing = Preprocessing.from_dict(info["preprocessing"])
        embedder = create_embedder(**config, weights=None)
    except (KeyError, TypeError, ValueError) as exc:
        reason = " ".join(str(exc).split())
        raise ArtefactError(
            f"{folder / CONFIG_FILE} describes no buildable embedder ({reason}); {_RESAVE}"
        ) from None
    embedder.preprocessing = preprocessing
    try:
        missing, unexpected = load_model(embedder, str(weights_path), strict=False)
    except Exception as exc:  # safetensors raises its own error types on corrupt headers
        reason = " ".join(str(exc).split())
        raise ArtefactError(
            f"cannot load {weights_path} into the described embedder: {reason}"
        ) from None
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
