"""Checks on embedding rows before they are trusted: finite values, and a norm for cosine.

A NaN or infinite component poisons every score it touches (FAISS ranks it anywhere), and a
zero row has no direction, so cosine similarity is undefined for it. Both are refused with the
file (or the name of the set) and the first bad row, rather than ranked.
"""

from __future__ import annotations

import numpy as np

from lookalike.utils.folders import ArtefactError


def check_vectors(vectors: np.ndarray, source: str, cosine: bool = False) -> None:
    """Refuse rows that are not finite, and zero rows when compared by cosine.

    Args:
        vectors: ``(N, D)`` rows.
        source: What they are, for the message (a file, "query embeddings").
        cosine: The rows will be compared by cosine similarity.

    Raises:
        ArtefactError: A row holds NaN or an infinity, or (cosine) has zero norm; the message
            names ``source`` and the first such row.
    """
    array = np.asarray(vectors)
    if array.ndim != 2 or array.size == 0:
        return
    finite = np.isfinite(array).all(axis=1)
    if not finite.all():
        row = int(np.flatnonzero(~finite)[0])
        raise ArtefactError(
            f"{source}: row {row} holds NaN or infinite values ({int((~finite).sum())} such rows); "
            "re-embed the images or remove those rows"
        )
    if cosine:
        zero = ~np.any(array != 0, axis=1)
        if zero.any():
            row = int(np.flatnonzero(zero)[0])
            raise ArtefactError(
                f"{source}: row {row} is all zeros ({int(zero.sum())} such rows), which cosine "
                "similarity cannot compare; re-embed the images or use metric l2"
            )
