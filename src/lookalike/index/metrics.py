"""Similarity metrics shared by every index, exact search and the evaluation code.

Scores keep the metric's own sense: similarities (cosine, inner product) are higher-is-better,
distances (Euclidean L2, L1) lower-is-better, and ``Metric.higher_is_better`` says which. Ranked
lists are always best first.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Metric:
    """A way of comparing two embeddings.

    Attributes:
        name: "cosine", "ip", "l2" or "l1".
        higher_is_better: True for similarities, False for distances.
        normalize: Whether embeddings are L2-normalised before comparison (cosine).
    """

    name: str
    higher_is_better: bool
    normalize: bool

    def prepare(self, vectors: np.ndarray) -> np.ndarray:
        """``(N, D)`` float32 contiguous rows, L2-normalised for cosine."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if self.normalize:
            # Norms accumulated in float64 (without a float64 copy of the rows): in float32 the
            # squared norm of a row of large (or tiny) values overflows (or underflows), which
            # turned the row into a zero vector that scores 0 against everything.
            squares = np.einsum("ij,ij->i", vectors, vectors, dtype=np.float64)
            norms = np.sqrt(squares)[:, None]
            vectors = (vectors / np.where(norms > 0, norms, 1.0)).astype(np.float32, copy=False)
        return vectors

    def pairwise(self, queries: torch.Tensor, gallery: torch.Tensor) -> torch.Tensor:
        """Scores ``(Q, N)`` between prepared ``queries (Q, D)`` and ``gallery (N, D)``."""
        if self.name in ("cosine", "ip"):
            return queries @ gallery.T
        if self.name == "l2":
            # Not the |x|^2 + |y|^2 - 2xy expansion torch uses for large inputs: it rounds in
            # the squared distance, so near zero a distance is off by ~sqrt(eps) * |x| and an
            # exact duplicate of an unnormalised embedding can rank below a near copy.
            return torch.cdist(queries, gallery, p=2.0, compute_mode="donot_use_mm_for_euclid_dist")
        return torch.cdist(queries, gallery, p=1.0)

    def worst(self) -> float:
        """The score that ranks below every real one (padding for missing neighbours)."""
        return float("-inf") if self.higher_is_better else float("inf")


METRICS: dict[str, Metric] = {
    "cosine": Metric("cosine", higher_is_better=True, normalize=True),
    "ip": Metric("ip", higher_is_better=True, normalize=False),
    "l2": Metric("l2", higher_is_better=False, normalize=False),
    "l1": Metric("l1", higher_is_better=False, normalize=False),
}
_ALIASES = {"inner_product": "ip", "dot": "ip", "euclidean": "l2", "manhattan": "l1", "cos": "cosine"}


def get_metric(name: str) -> Metric:
    """The :class:`Metric` called ``name`` (aliases: inner_product, dot, euclidean, manhattan)."""
    key = _ALIASES.get(name.lower(), name.lower())
    if key not in METRICS:
        raise ValueError(f"unknown metric {name!r}; valid names: {', '.join(sorted(METRICS))}")
    return METRICS[key]
