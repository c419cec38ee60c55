"""The ONNX export folder: a graph, what rebuilds its eval transform, and a manifest.

::

    model.onnx          the graph: ``images (B, 3, S, S) float32 -> embeddings (B, D) float32``
    onnx_embedder.json  format, the source embedder's config and preprocessing, ``embedding_dim``,
                        ``normalize``, ``fingerprint``, ``source_fingerprint``, ``precision``
                        (``fp32`` or ``int8``), ``opset`` and the parity / quantisation report
    manifest.json       kind ``onnx_model``, sizes and SHA-256 of both files; written last

The folder alone rebuilds the exact evaluation transform (:class:`Preprocessing`) and identifies
the model: an fp32 export carries the fingerprint of the PyTorch embedder it was checked against
(its outputs are equal to float rounding, so embeddings and indexes of either mix), an int8 one a
fingerprint of its own (its outputs differ, so they never mix).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from lookalike.models.preprocessing import Preprocessing
from lookalike.utils.folders import (
    MANIFEST_FILE,
    ArtefactError,
    read_manifest,
    verify_folder,
    write_manifest,
)
from lookalike.utils.readers import read_json_object

ONNX_FILE = "model.onnx"
DESCRIPTION_FILE = "onnx_embedder.json"
ONNX_KIND = "onnx_model"
FORMAT = "lookalike-onnx-embedder"
FORMAT_VERSION = 1
PRECISIONS = ("fp32", "int8")
_REEXPORT = "export the model again with `lookalike export`"
_REQUIRED = ("config", "preprocessing", "embedding_dim", "normalize", "fingerprint", "precision")


def require_onnx(module: str = "onnxruntime") -> Any:
    """Import ``module`` of the ``onnx`` extra, or fail with one line saying how to install it.

    Raises:
        ValueError: The module is not installed.
    """
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ValueError(
            f"{module} is not installed; ONNX export and ONNX Runtime need "
            "pip install 'lookalike[onnx]'"
        ) from None


def is_onnx_folder(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is (or is a file of) an ONNX export folder, finished or not: a folder
    holding ``onnx_embedder.json``, or whose manifest says ``onnx_model``."""
    folder = Path(path)
    if folder.name in (ONNX_FILE, DESCRIPTION_FILE):
        folder = folder.parent
    if not folder.is_dir():
        return False
    if (folder / DESCRIPTION_FILE).is_file():
        return True
    if not (folder / MANIFEST_FILE).is_file():
        return False
    try:
        return read_manifest(folder).kind == ONNX_KIND
    except ArtefactError:
        return False


def onnx_folder(path: str | os.PathLike[str]) -> Path:
    """The export folder of ``path`` (the folder itself, or one of its two files)."""
    folder = Path(path)
    if folder.name in (ONNX_FILE, DESCRIPTION_FILE):
        folder = folder.parent
    if not folder.exists():
        raise FileNotFoundError(f"ONNX export {folder} does not exist; {_REEXPORT}")
    return folder


def write_description(folder: Path, description: dict[str, Any]) -> None:
    """Write ``onnx_embedder.json`` (the fields of :data:`_REQUIRED` and any report)."""
    missing = [key for key in _REQUIRED if key not in description]
    if missing:
        raise ValueError(f"an ONNX export description needs {', '.join(missing)}")
    if description["precision"] not in PRECISIONS:
        raise ValueError(
            f"unknown precision {description['precision']!r}; valid: {', '.join(PRECISIONS)}"
        )
    body = {"format": FORMAT, "format_version": FORMAT_VERSION, **description}
    (folder / DESCRIPTION_FILE).write_text(json.dumps(body, indent=2, sort_keys=True) + "\n")


def finish_folder(folder: Path, description: dict[str, Any]) -> None:
    """Write the description, then the manifest (last) of an export being built in ``folder``."""
    write_description(folder, description)
    write_manifest(
        folder,
        ONNX_KIND,
        description["fingerprint"],
        extra={"precision": description["precision"], "embedding_dim": description["embedding_dim"]},
    )


def read_description(folder: Path) -> dict[str, Any]:
    """The parsed, checked ``onnx_embedder.json`` of ``folder`` (manifest not verified)."""
    path = folder / DESCRIPTION_FILE
    info = read_json_object(path, _REEXPORT)
    if info.get("format") != FORMAT:
        raise ArtefactError(f"{path} is not a lookalike ONNX export description; {_REEXPORT}")
    missing = [key for key in _REQUIRED if key not in info]
    if missing:
        raise ArtefactError(f"{path} lacks {', '.join(missing)}; {_REEXPORT}")
    if not isinstance(info["config"], dict) or not isinstance(info["preprocessing"], dict):
        raise ArtefactError(f"{path}: config and preprocessing must be objects; {_REEXPORT}")
    try:
        Preprocessing.from_dict(info["preprocessing"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ArtefactError(f"{path}: unreadable preprocessing ({exc}); {_REEXPORT}") from None
    if info["precision"] not in PRECISIONS:
        raise ArtefactError(f"{path}: unknown precision {info['precision']!r}; {_REEXPORT}")
    return info


def read_onnx_info(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The description of a finished export folder, after verifying it against its manifest.

    Raises:
        FileNotFoundError: The folder does not exist.
        ArtefactError: The folder is unfinished, damaged, of another kind, or its description
            is unreadable (one line naming the file).
    """
    folder = onnx_folder(path)
    verify_folder(folder, ONNX_KIND)
    return read_description(folder)
