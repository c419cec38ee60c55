"""Review of PCA whitening (Jégou & Chum 2012; Radenović et al. 2018) where users hit it: fewer
training vectors than dimensions (shrinkage), and the whitening variant of ``evaluate``."""

from __future__ import annotations

import numpy as np

from lookalike.embed.store import EmbeddingSet
from lookalike.pipeline.postprocess import PostprocessSpec, rank_variant
from lookalike.search.whitening import PCAWhitening


def _shrunk_covariance(data: np.ndarray, shrinkage: float) -> np.ndarray:
    centred = data - data.mean(axis=0)
    covariance = centred.T @ centred / len(data)
    width = data.shape[1]
    return (1 - shrinkage) * covariance + shrinkage * np.trace(covariance) / width * np.eye(width)


def test_fewer_vectors_than_dimensions_whiten_the_shrunk_covariance() -> None:
    """N = 5 < D = 9: the directions the data do not span get the shrinkage eigenvalue."""
    data = np.random.default_rng(0).normal(size=(5, 9)) + 2.0
    shrunk = _shrunk_covariance(data, 0.2)
    whitening = PCAWhitening.fit(data, dim=9, shrinkage=0.2)
    projection = whitening.projection
    np.testing.assert_allclose(projection @ shrunk @ projection.T, np.eye(9), atol=1e-8)
    np.testing.assert_allclose(projection.T @ projection, np.linalg.inv(shrunk), rtol=1e-6)
    np.testing.assert_allclose(
        whitening.eigenvalues, np.sort(np.linalg.eigvalsh(shrunk))[::-1], rtol=1e-8
    )
    reduced = PCAWhitening.fit(data, dim=3, shrinkage=0.2)
    np.testing.assert_allclose(reduced.eigenvalues, whitening.eigenvalues[:3], rtol=1e-8)


def test_whitening_variant_ranks_by_the_whitened_cosine() -> None:
    """The variant fits on the gallery and ranks by cosine of ``P (x - m)``: Mahalanobis-like
    similarity ``(x - m)^T C^-1 (y - m)`` normalised, computed here from the covariance alone."""
    rng = np.random.default_rng(1)
    mixing = rng.normal(size=(6, 6)) * np.array([3.0, 2.0, 1.0, 0.5, 0.2, 0.1])
    vectors = (rng.normal(size=(40, 6)) @ mixing + 1.0).astype(np.float32)
    ids = [f"v{i}" for i in range(40)]
    items = EmbeddingSet(vectors, ids, ids, [str(i % 4) for i in range(40)])
    spec = PostprocessSpec(whitening=True, whitening_shrinkage=0.1, depth=39)
    result = rank_variant(items, items, ["whitening"], spec, metric="cosine", exclude_self=True)
    data = vectors.astype(np.float64)
    inverse = np.linalg.inv(_shrunk_covariance(data, 0.1))
    centred = data - data.mean(axis=0)
    gram = centred @ inverse @ centred.T
    norms = np.sqrt(np.diag(gram))
    similarity = gram / norms[:, None] / norms[None, :]
    np.fill_diagonal(similarity, -np.inf)
    expected = np.argsort(-similarity, axis=1, kind="stable")[:, :39]
    np.testing.assert_array_equal(result.indices, expected)
