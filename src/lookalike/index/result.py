"""The output of a top-k search, shared by indexes, metrics, re-ranking, rejection and writers."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class SearchResult:
    """Top-k neighbours of each query, best first.

    Attributes:
        scores: ``(Q, k)`` float32 in the metric's own sense (similarity or distance).
        indices: ``(Q, k)`` int64 row numbers into the gallery; -1 where fewer than k exist.
        higher_is_better: True when ``scores`` are similarities.
    """

    scores: np.ndarray
    indices: np.ndarray
    higher_is_better: bool = True

    def __post_init__(self) -> None:
        self.scores = np.asarray(self.scores, dtype=np.float32)
        self.indices = np.asarray(self.indices, dtype=np.int64)
        if self.scores.shape != self.indices.shape or self.scores.ndim != 2:
            raise ValueError(
                f"scores {self.scores.shape} and indices {self.indices.shape} must be equal (Q, k)"
            )

    @property
    def k(self) -> int:
        return int(self.indices.shape[1])

    def __len__(self) -> int:
        return int(self.indices.shape[0])

    def top(self, k: int) -> SearchResult:
        """The first ``k`` columns."""
        return SearchResult(self.scores[:, :k], self.indices[:, :k], self.higher_is_better)
