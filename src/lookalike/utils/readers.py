"""Readers of the files inside artefact folders, each failing with one line that names the file.

A folder's manifest catches damage, but a file edited together with its manifest (or written by
a buggy job) still reaches a parser; NumPy, pyarrow and :mod:`json` then raise from deep inside
with messages that name no file ("couldn't deserialize thrift", "Expecting value: line 1
column 1"), and of many types (a fuzzed ``.npy`` header raises ``tokenize.TokenError``, fuzzed
Parquet metadata ``TypeError``). These readers turn every such failure into an
:class:`~lookalike.utils.folders.ArtefactError` naming the file and the fix.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lookalike.utils.folders import ArtefactError, unreadable


def read_matrix(path: str | os.PathLike[str], fix: str) -> np.ndarray:
    """A ``(N, D)`` float32 array saved with ``np.save`` (no pickles).

    Args:
        path: The ``.npy`` file.
        fix: What the user should do when it is unreadable.

    Raises:
        ArtefactError: The file is not a ``.npy`` array, or not a 2-D float32 one.
    """
    path = Path(path)
    try:
        array = np.load(path, allow_pickle=False)
    except Exception as error:  # noqa: BLE001 - NumPy's header parser raises many types
        raise unreadable(path, error, fix) from None
    if not isinstance(array, np.ndarray) or array.ndim != 2 or array.dtype != np.float32:
        shape = getattr(array, "shape", None)
        dtype = getattr(array, "dtype", type(array).__name__)
        raise ArtefactError(
            f"{path} holds a {dtype} array of shape {shape}, not (N, D) float32; {fix}"
        )
    return array


def read_records(path: str | os.PathLike[str], fix: str) -> pd.DataFrame:
    """The ``id, path, label`` Parquet table of an artefact folder.

    Raises:
        ArtefactError: The file is not Parquet, or lacks one of the columns.
    """
    path = Path(path)
    try:
        frame = pd.read_parquet(path)
    except Exception as error:  # noqa: BLE001 - pyarrow and pandas metadata raise many types
        raise unreadable(path, error, fix) from None
    absent = [column for column in ("id", "path", "label") if column not in frame.columns]
    if absent:
        raise ArtefactError(f"{path} lacks the column(s) {', '.join(absent)}; {fix}")
    return frame


def read_json_object(path: str | os.PathLike[str], fix: str) -> dict[str, Any]:
    """The JSON object in ``path``.

    Raises:
        ArtefactError: The file is not UTF-8 JSON, or holds something other than an object.
    """
    path = Path(path)
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise unreadable(path, error, fix) from None
    if not isinstance(value, dict):
        raise ArtefactError(f"{path} holds {type(value).__name__}, not a JSON object; {fix}")
    return value
