"""2-D maps of embeddings for reports: UMAP when umap-learn is installed, PCA otherwise.

UMAP (McInnes, Healy and Melville, "UMAP: Uniform Manifold Approximation and Projection for
Dimension Reduction", 2018) keeps local neighbourhoods, which is what a retrieval model is judged
on; it is an optional extra (``lookalike[umap]``), so without it the map falls back to the first
two principal components (exact, scikit-learn's PCA).
Points are subsampled (seeded, in proportion to each group) so a map of SOP takes seconds.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.decomposition import PCA

from lookalike.index.metrics import get_metric

logger = logging.getLogger(__name__)

DEFAULT_MAX_POINTS = 3000


@dataclass
class Projection:
    """A 2-D map of embeddings.

    Attributes:
        points: ``(P, 2)`` float32 coordinates.
        groups: ``P`` group names (a class, or "train"/"test") used for colours.
        method: "umap" or "pca".
        total: Points before subsampling.
    """

    points: np.ndarray
    groups: list[str]
    method: str
    total: int


def subsample(sizes: Sequence[int], max_points: int, seed: int = 0) -> list[np.ndarray]:
    """Sorted rows to keep from each of several sets, at most ``max_points`` in all.

    Each set keeps a share proportional to its size (at least one row when it is non-empty).

    Args:
        sizes: Number of rows of each set.
        max_points: Total rows kept at most.
        seed: Seed of the draw.

    Returns:
        One int64 array of kept rows per set.
    """
    if max_points < 1:
        raise ValueError(f"max_points must be positive, got {max_points}")
    total = int(sum(sizes))
    rng = np.random.default_rng(seed)
    kept = []
    for size in sizes:
        if total <= max_points:
            kept.append(np.arange(size, dtype=np.int64))
            continue
        share = max(1, int(size * max_points / total)) if size else 0
        kept.append(np.sort(rng.choice(size, size=share, replace=False)).astype(np.int64))
    return kept


def pca_2d(embeddings: np.ndarray) -> np.ndarray:
    """``(P, 2)`` float32 coordinates on the first two principal components of ``(P, D)`` rows.

    Exact: an SVD of the centred rows in float64 (sklearn's PCA with the "full" solver), with
    sklearn's sign convention; a zero column where ``D == 1``.
    """
    rows = np.asarray(embeddings, dtype=np.float64)
    if rows.ndim != 2 or rows.shape[0] < 2:
        raise ValueError(f"PCA needs a (P >= 2, D) array, got shape {rows.shape}")
    pca = PCA(n_components=min(2, rows.shape[1]), svd_solver="full")
    coordinates = pca.fit_transform(rows)
    return np.pad(coordinates, ((0, 0), (0, 2 - coordinates.shape[1]))).astype(np.float32)


def umap_2d(embeddings: np.ndarray, seed: int = 0) -> np.ndarray:
    """``(P, 2)`` UMAP coordinates of ``(P, D)`` rows; raises ImportError without umap-learn."""
    import umap

    rows = np.asarray(embeddings, dtype=np.float32)
    neighbours = max(2, min(15, rows.shape[0] - 1))
    reducer = umap.UMAP(n_components=2, n_neighbors=neighbours, random_state=seed, n_jobs=1)
    return np.asarray(reducer.fit_transform(rows), dtype=np.float32)


def project_2d(
    embeddings: np.ndarray, method: str = "auto", seed: int = 0
) -> tuple[np.ndarray, str]:
    """2-D coordinates of ``(P, D)`` rows and the method used.

    Args:
        embeddings: ``(P, D)`` rows, already prepared for the metric (normalised for cosine).
        method: "umap", "pca", or "auto" (UMAP when umap-learn imports, else PCA).
        seed: Seed of UMAP's layout.

    Returns:
        ``(P, 2)`` float32 coordinates and "umap" or "pca".
    """
    if method not in ("auto", "umap", "pca"):
        raise ValueError(f"unknown projection method {method!r}; valid names: auto, pca, umap")
    rows = np.asarray(embeddings, dtype=np.float32)
    if method != "pca" and rows.shape[0] > 3:
        try:
            return umap_2d(rows, seed), "umap"
        except ImportError:
            if method == "umap":
                raise ImportError(
                    "umap-learn is not installed; `pip install lookalike[umap]` or use method='pca'"
                ) from None
            logger.info("umap-learn is not installed: projecting embeddings with PCA")
    return pca_2d(rows), "pca"


def project_sets(
    sets: Sequence[tuple[np.ndarray, Sequence[str]]],
    metric: str = "cosine",
    max_points: int = DEFAULT_MAX_POINTS,
    method: str = "auto",
    seed: int = 0,
) -> Projection:
    """Map several embedding sets together, each row with its group name.

    Args:
        sets: ``(embeddings (N_i, D), groups (N_i names))`` per set, e.g. train and test rows
            grouped "train"/"test", or one set grouped by class.
        metric: The run's metric; rows are prepared for it (L2-normalised for cosine).
        max_points: Rows kept in all, drawn in proportion to each set's size.
        method: "auto", "umap" or "pca".
        seed: Seed of the subsample and the projection.
    """
    prepare = get_metric(metric).prepare
    kept = subsample([len(embeddings) for embeddings, _ in sets], max_points, seed)
    rows, groups = [], []
    for (embeddings, names), keep in zip(sets, kept):
        if len(names) != len(embeddings):
            raise ValueError(f"{len(embeddings)} embeddings but {len(names)} group names")
        rows.append(prepare(np.asarray(embeddings)[keep]))
        groups.extend(str(names[i]) for i in keep.tolist())
    stacked = np.concatenate(rows)
    points, used = project_2d(stacked, method, seed)
    return Projection(points, groups, used, sum(len(embeddings) for embeddings, _ in sets))
