"""Learned PCA whitening of embeddings, applied before search.

The unsupervised variant of the learned whitening of Radenović, Tolias and Chum, "Fine-tuning CNN
Image Retrieval with No Human Annotation" (TPAMI 2018), after Jégou and Chum, "Negative evidences
and co-occurrences in image retrieval" (ECCV 2012): centre on the mean ``m`` of a training (or
gallery) set, rotate onto the eigenvectors ``U`` of its covariance ``C = U S U^T`` and scale each
axis by ``S^{-1/2}``, so ``P = S^{-1/2} U^T`` and ``x -> normalise(P (x - m))``. Keeping only the
first ``d`` rows of ``P`` reduces the dimension at the same time.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.linalg import null_space
from sklearn.decomposition import PCA

from lookalike.utils.atomic import atomic_path

logger = logging.getLogger(__name__)

_KEYS = ("mean", "projection", "eigenvalues")


@dataclass(frozen=True)
class PCAWhitening:
    """A learned whitening ``x -> normalise(projection @ (x - mean))``.

    Attributes:
        mean: ``(D,)`` float64 mean of the training embeddings.
        projection: ``(d, D)`` float64 ``diag((s + eps)^{-1/2}) U^T`` over the ``d`` largest
            eigenvalues ``s`` of the (shrunk) training covariance, largest first.
        eigenvalues: ``(d,)`` float64 those eigenvalues ``s``, largest first (before ``eps``).
    """

    mean: np.ndarray
    projection: np.ndarray
    eigenvalues: np.ndarray

    def __post_init__(self) -> None:
        dim, width = self.projection.shape
        if self.mean.shape != (width,) or self.eigenvalues.shape != (dim,):
            raise ValueError(
                f"inconsistent whitening: mean {self.mean.shape}, projection "
                f"{self.projection.shape}, eigenvalues {self.eigenvalues.shape}"
            )

    @property
    def input_dim(self) -> int:
        """``D``, the width of the embeddings it accepts."""
        return int(self.mean.shape[0])

    @property
    def output_dim(self) -> int:
        """``d``, the width of the whitened embeddings."""
        return int(self.projection.shape[0])

    @classmethod
    def fit(
        cls,
        embeddings: np.ndarray,
        dim: int | None = None,
        shrinkage: float = 0.0,
        eps: float = 0.0,
    ) -> PCAWhitening:
        """Learn the whitening from training (or gallery) embeddings.

        The covariance is the biased estimate ``C = (X - m)^T (X - m) / N`` (as cirtorch's
        ``pcawhitenlearn``), shrunk towards a scaled identity when ``shrinkage > 0`` (Ledoit and
        Wolf, "A well-conditioned estimator for large-dimensional covariance matrices", 2004):
        ``(1 - shrinkage) C + shrinkage (tr(C) / D) I``, which keeps the weak directions from being
        blown up when ``N`` is small against ``D``.

        Args:
            embeddings: ``(N, D)`` training embeddings.
            dim: Output width ``d``; defaults to ``D``, or to the rank ``min(D, N - 1)`` of the
                centred data when ``shrinkage == 0``.
            shrinkage: In ``[0, 1]``; 0 is plain PCA whitening.
            eps: Added to every eigenvalue before the inverse square root (regularisation).

        Returns:
            The fitted :class:`PCAWhitening`.
        """
        data = np.asarray(embeddings, dtype=np.float64)
        if data.ndim != 2 or data.shape[0] < 2:
            raise ValueError(f"embeddings must be (N, D) with N >= 2, got shape {data.shape}")
        if not np.isfinite(data).all():
            raise ValueError("embeddings hold NaN or infinite values; fix the embedding step")
        if not 0.0 <= shrinkage <= 1.0:
            raise ValueError(f"shrinkage must lie in [0, 1], got {shrinkage}")
        if eps < 0.0:
            raise ValueError(f"eps must be >= 0, got {eps}")
        num, width = data.shape
        rank = width if shrinkage > 0.0 else min(width, num - 1)
        dim = rank if dim is None else dim
        if not 1 <= dim <= rank:
            raise ValueError(
                f"dim={dim} must lie in [1, {rank}]: {num} training vectors of width {width} span "
                f"only {rank} directions{'' if shrinkage > 0 else '; pass shrinkage > 0 for more'}"
            )
        # An exact SVD of the centred data, not an eigendecomposition of X^T X - N m m^T, which
        # loses the smallest eigenvalues (those whitening amplifies most) to cancellation when the
        # embeddings share a large mean, as L2-normalised post-ReLU features do.
        pca = PCA(svd_solver="full").fit(data)
        # The biased covariance (1 / N, as cirtorch's pcawhitenlearn), not sklearn's 1 / (N - 1).
        variances = pca.singular_values_**2 / num
        eigenvalues, eigenvectors = variances[:dim], pca.components_[:dim]
        if dim > len(eigenvectors):
            # Only with shrinkage: the centred data span fewer directions than asked for; the
            # rest, of eigenvalue 0, are any orthonormal basis of the remaining space.
            complement = null_space(eigenvectors).T[: dim - len(eigenvectors)]
            eigenvectors = np.concatenate([eigenvectors, complement])
            eigenvalues = np.pad(eigenvalues, (0, len(complement)))
        if shrinkage > 0.0:
            # The shrunk covariance has the same eigenvectors; each eigenvalue s becomes
            # (1 - shrinkage) s + shrinkage tr(C) / D, the trace being the sum of all of them.
            scale = variances.sum() / width
            eigenvalues = (1.0 - shrinkage) * eigenvalues + shrinkage * scale
        if (eigenvalues + eps <= 0.0).any():
            raise ValueError(
                f"the covariance has {int((eigenvalues + eps <= 0).sum())} non-positive "
                f"eigenvalues among the {dim} kept; lower dim, or pass eps > 0 or shrinkage > 0"
            )
        projection = eigenvectors / np.sqrt(eigenvalues + eps)[:, None]
        logger.info("learned PCA whitening %d -> %d from %d vectors", width, dim, num)
        return cls(mean=pca.mean_, projection=projection, eigenvalues=eigenvalues)

    def transform(self, embeddings: np.ndarray, normalize: bool = True) -> np.ndarray:
        """Whiten embeddings.

        Args:
            embeddings: ``(M, D)`` embeddings of the same model as the training set.
            normalize: L2-normalise the whitened rows (what retrieval uses); False gives the raw
                ``projection @ (x - mean)``.

        Returns:
            ``(M, d)`` float32.
        """
        data = np.asarray(embeddings, dtype=np.float64)
        if data.ndim != 2 or data.shape[1] != self.input_dim:
            raise ValueError(
                f"embeddings must be (M, {self.input_dim}) to match the whitening, "
                f"got shape {data.shape}"
            )
        whitened = (data - self.mean) @ self.projection.T
        if normalize:
            norms = np.linalg.norm(whitened, axis=1, keepdims=True)
            whitened = whitened / np.maximum(norms, 1e-12)
        return whitened.astype(np.float32)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the whitening to an ``.npz`` file atomically."""
        with atomic_path(path) as tmp, open(tmp, "wb") as handle:
            np.savez(
                handle, mean=self.mean, projection=self.projection, eigenvalues=self.eigenvalues
            )

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PCAWhitening:
        """Read a whitening written by :meth:`save`."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"whitening file {path} does not exist; fit and save one first")
        with np.load(path, allow_pickle=False) as arrays:
            missing = [key for key in _KEYS if key not in arrays.files]
            if missing:
                raise ValueError(
                    f"{path} is not a PCAWhitening file: it lacks {', '.join(missing)}"
                )
            return cls(**{key: np.asarray(arrays[key], dtype=np.float64) for key in _KEYS})
