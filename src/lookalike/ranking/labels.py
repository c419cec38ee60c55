"""One label encoding and one relevance rule for every ranking in lookalike.

A query is relevant to a gallery item when both carry the same label. Two kinds of item have no
label, and each has one code here, used by metrics, open-set scoring, re-ranking variants and
reports alike:

- an unlabelled **query** (``None``) has no ground truth: code :data:`UNLABELLED_QUERY`; it is
  ranked but left out of metrics, and in open-set scoring it is a distractor whose right answer
  is "no match";
- an unlabelled **gallery** item (``None``, a distractor image) is never a correct answer: code
  :data:`UNLABELLED_GALLERY`, which no query code equals.

:data:`UNLABELLED` is how such an item is shown to people (report tables, grids).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from dataclasses import dataclass

import numpy as np
import torch

UNLABELLED = "(unlabelled)"
UNLABELLED_QUERY = -1
UNLABELLED_GALLERY = -2


@dataclass(frozen=True)
class LabelCodes:
    """Query and gallery labels as shared int64 codes.

    Attributes:
        query: ``(Q,)`` codes, :data:`UNLABELLED_QUERY` for a query without a label.
        gallery: ``(N,)`` codes, :data:`UNLABELLED_GALLERY` for a gallery item without a label.
        classes: The label of each code ``0 .. C-1``, in order of first appearance (gallery first).
    """

    query: np.ndarray
    gallery: np.ndarray
    classes: list[Hashable]

    @property
    def labelled_queries(self) -> np.ndarray:
        """``(Q,)`` bool, the queries that have a label."""
        return self.query >= 0

    def class_sizes(self) -> np.ndarray:
        """``(C,)`` int64 gallery items per class."""
        labelled = self.gallery[self.gallery >= 0]
        return np.bincount(labelled, minlength=len(self.classes)).astype(np.int64)

    def num_relevant(self) -> np.ndarray:
        """``(Q,)`` int64 gallery items sharing each query's label (0 for unlabelled queries)."""
        sizes = self.class_sizes()
        return np.where(self.query >= 0, sizes[np.maximum(self.query, 0)], 0).astype(np.int64)


def _as_list(labels: Iterable[Hashable | None] | np.ndarray | torch.Tensor, name: str) -> list:
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    if isinstance(labels, np.ndarray) and labels.ndim != 1:
        raise ValueError(f"{name} must be one label per row, got an array of shape {labels.shape}")
    return list(labels)


def _equals_itself(label: Hashable) -> bool:
    """False for NaN, ``pd.NA`` and ``NaT``: as dict keys they are one class or many depending on
    object identity (pandas shares one ``np.nan``), so they cannot be labels."""
    try:
        return bool(label == label)  # noqa: PLR0124 (deliberate: NaN is not equal to itself)
    except (TypeError, ValueError):
        return False


def encode_labels(
    query_labels: Iterable[Hashable | None],
    gallery_labels: Iterable[Hashable | None],
    allow_unlabelled: bool = True,
) -> LabelCodes:
    """Map hashable labels (strings, ints, tuples) to shared codes; equal labels, equal codes.

    Args:
        query_labels: ``Q`` labels, ``None`` for a query without ground truth.
        gallery_labels: ``N`` labels, ``None`` for a distractor image.
        allow_unlabelled: When False, a ``None`` label is an error (pure metric evaluation).

    Raises:
        ValueError: A label is unhashable, is a missing value other than ``None`` (NaN,
            ``pd.NA``, ``NaT``: not equal to itself), or is ``None`` where ``allow_unlabelled``
            is False.
    """
    codes: dict[Hashable, int] = {}

    def encode(labels: list, name: str, missing: int) -> np.ndarray:
        out = np.empty(len(labels), dtype=np.int64)
        for row, label in enumerate(labels):
            if label is None:
                if not allow_unlabelled:
                    raise ValueError(
                        f"{name}[{row}] is None; drop unlabelled images before evaluating"
                    )
                out[row] = missing
                continue
            try:
                out[row] = codes.setdefault(label, len(codes))
            except TypeError as error:
                raise ValueError(f"{name}[{row}] = {label!r} is not hashable") from error
            if not _equals_itself(label):
                raise ValueError(
                    f"{name}[{row}] is {label!r}, a missing value that is no label; use None "
                    "for an image without a label"
                )
        return out

    gallery = encode(_as_list(gallery_labels, "gallery_labels"), "gallery_labels", UNLABELLED_GALLERY)
    query = encode(_as_list(query_labels, "query_labels"), "query_labels", UNLABELLED_QUERY)
    return LabelCodes(query, gallery, list(codes))


def relevance(indices: np.ndarray, codes: LabelCodes) -> np.ndarray:
    """``(Q, K)`` bool: gallery row ``indices[q, j]`` shares query ``q``'s label.

    Args:
        indices: ``(Q, K)`` gallery rows, best first, -1 for a missing neighbour (never relevant).
        codes: The encoded labels.
    """
    indices = np.asarray(indices, dtype=np.int64)
    if indices.ndim != 2 or indices.shape[0] != len(codes.query):
        raise ValueError(
            f"neighbour rows must be (Q={len(codes.query)}, K), got shape {indices.shape}"
        )
    if indices.size and (indices.max() >= len(codes.gallery) or indices.min() < -1):
        raise ValueError(f"neighbour rows must lie in [-1, {len(codes.gallery)})")
    found = indices >= 0
    same = codes.gallery[np.maximum(indices, 0)] == codes.query[:, None]
    return found & same & (codes.query >= 0)[:, None]
