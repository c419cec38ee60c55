"""CSV and Parquet manifests: one row per image, ``path,label[,split][,caption][,id]``.

:func:`read_manifest` reads one into an :class:`~lookalike.data.records.ImageSet`; the ``"csv"``
data source (:mod:`lookalike.data.sources`) is it, registered.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any

import pandas as pd

from lookalike.data.records import SPLITS, ImageRecord, ImageSet

logger = logging.getLogger(__name__)

MANIFEST_COLUMNS = ("path", "label")
"""The columns every manifest has."""


def read_manifest(
    path: str | os.PathLike[str], root: str | os.PathLike[str] | None = None
) -> ImageSet:
    """Images listed in a CSV or Parquet manifest (chosen by the file's suffix).

    Columns: ``path`` and ``label`` are required; ``split`` (one of
    :data:`~lookalike.data.records.SPLITS` or empty), ``caption`` and ``id`` are optional. An empty
    label means unlabelled; an empty or absent id defaults to ``path`` as written. Rows keep the
    manifest's order; rows are numbered from 1 after the header in error messages.

    Args:
        path: The manifest file (``.csv``, ``.parquet`` or ``.pq``).
        root: Folder that relative image paths are resolved against; the manifest's folder by
            default. Image files are not opened here (loading reports unreadable ones); listed
            files that do not exist are logged as a warning naming the first one's row.

    Raises:
        FileNotFoundError: The manifest does not exist.
        ValueError: A required column is missing, or a row has an empty path, an unknown split or
            a duplicate id.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"manifest {path} does not exist")
    table = _read_table(path)
    missing = [column for column in MANIFEST_COLUMNS if column not in table.columns]
    if missing:
        raise ValueError(
            f"manifest {path} lacks column(s) {', '.join(missing)}; it has "
            f"{', '.join(map(str, table.columns)) or 'none'} "
            "(expected path,label[,split][,caption][,id])"
        )
    base = Path(root) if root is not None else path.parent
    base = base.absolute()
    optional = [column for column in ("split", "caption", "id") if column in table.columns]
    columns = [*MANIFEST_COLUMNS, *optional]
    records: list[ImageRecord] = []
    seen: dict[str, int] = {}
    for row_number, row in enumerate(table[columns].itertuples(index=False), 1):
        cells = dict(zip(columns, (_cell(v) for v in row)))
        image = cells["path"]
        if image is None:
            raise ValueError(f"manifest {path}, row {row_number}: empty path")
        split = cells.get("split")
        if split is not None and split not in SPLITS:
            raise ValueError(
                f"manifest {path}, row {row_number}: split {split!r} is not one of "
                f"{', '.join(SPLITS)} (or empty)"
            )
        image_id = cells.get("id") or Path(image).as_posix()
        if image_id in seen:
            raise ValueError(
                f"manifest {path}, row {row_number}: id {image_id!r} repeats row "
                f"{seen[image_id]}; ids must be unique"
            )
        seen[image_id] = row_number
        image_path = Path(image)
        records.append(
            ImageRecord(
                id=image_id,
                path=image_path if image_path.is_absolute() else base / image_path,
                label=cells["label"],
                split=split,
                caption=cells.get("caption"),
            )
        )
    if not records:
        raise ValueError(f"manifest {path} has no rows")
    _warn_missing_files(path, base, records)
    _warn_repeated_files(path, records)
    return ImageSet(records)


def _cell(value: Any) -> str | None:
    """A manifest cell as text: ``None`` when empty, missing or NaN; integral floats lose ``.0``."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if value.is_integer():
            return str(int(value))
    text = str(value).strip()
    return text or None


def _read_table(path: Path) -> pd.DataFrame:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    if suffix in (".parquet", ".pq"):
        # Nullable dtypes: an integer column with empty cells stays integer (as float64 it would
        # merge labels above 2**53) and its empty cells read as missing, not as a label "<NA>".
        return pd.read_parquet(path, dtype_backend="numpy_nullable")
    raise ValueError(
        f"manifest {path} must be a .csv or .parquet file, not {suffix or 'no suffix'!r}"
    )


def _warn_repeated_files(manifest: Path, records: list[ImageRecord]) -> None:
    """Log an image file listed on two rows under two ids (rows from 1): legitimate as a train
    and a gallery image, but as query and gallery (or twice in all-vs-all) it finds itself."""
    first_row: dict[Path, int] = {}
    repeats = []
    for row, record in enumerate(records, 1):
        if record.path in first_row:
            repeats.append((row, first_row[record.path], record.path))
        else:
            first_row[record.path] = row
    if repeats:
        row, first, image = repeats[0]
        logger.warning(
            "manifest %s: %d rows list an image another row lists too (first: row %d, %s, "
            "as row %d); a query finds its own file where both rows are evaluated",
            manifest, len(repeats), row, image, first,
        )


def _warn_missing_files(manifest: Path, base: Path, records: list[ImageRecord]) -> None:
    """Log how many listed images do not exist, naming the first one's row (from 1)."""
    missing = [row for row, record in enumerate(records, 1) if not record.path.exists()]
    if missing:
        logger.warning(
            "manifest %s: %d of %d listed images do not exist (first: row %d, %s); they are "
            "reported as skipped. Relative paths resolve against %s",
            manifest, len(missing), len(records), missing[0], records[missing[0] - 1].path, base,
        )
