"""PCA whitening against closed forms: identity covariance, Mahalanobis Gram matrix, sklearn PCA."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.decomposition import PCA

from lookalike.search.whitening import PCAWhitening


@pytest.fixture
def training() -> np.ndarray:
    rng = np.random.default_rng(0)
    mixing = rng.normal(size=(6, 6)) * np.array([3.0, 2.0, 1.0, 0.5, 0.2, 0.1])
    return (rng.normal(size=(200, 6)) @ mixing + 5.0).astype(np.float32)


def test_whitened_training_data_has_identity_covariance(training):
    whitening = PCAWhitening.fit(training)
    whitened = whitening.transform(training, normalize=False).astype(np.float64)
    np.testing.assert_allclose(whitened.mean(axis=0), 0.0, atol=1e-4)
    np.testing.assert_allclose(whitened.T @ whitened / len(whitened), np.eye(6), atol=1e-4)


def test_full_whitening_equals_mahalanobis_closed_form(training):
    """``<Px, Py> = (x - m)^T C^{-1} (y - m)`` whatever the eigenvector signs."""
    data = training.astype(np.float64)
    mean = data.mean(axis=0)
    covariance = np.cov(data, rowvar=False, bias=True)
    test = np.random.default_rng(1).normal(size=(5, 6)) * 2.0 + 5.0
    whitened = PCAWhitening.fit(training).transform(test, normalize=False).astype(np.float64)
    expected = (test - mean) @ np.linalg.inv(covariance) @ (test - mean).T
    np.testing.assert_allclose(whitened @ whitened.T, expected, rtol=1e-4, atol=1e-4)


def test_reduced_whitening_matches_sklearn_pca_up_to_sign(training):
    test = np.random.default_rng(2).normal(size=(7, 6))
    ours = PCAWhitening.fit(training, dim=3).transform(test)
    reference = PCA(n_components=3, whiten=True, svd_solver="full").fit(training.astype(np.float64))
    theirs = reference.transform(test)
    theirs /= np.linalg.norm(theirs, axis=1, keepdims=True)
    signs = np.sign((ours * theirs).sum(axis=0))
    assert ours.shape == (7, 3)
    np.testing.assert_allclose(ours * signs, theirs, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-6)


def test_shrinkage_and_eps_follow_their_closed_form(training):
    data = training.astype(np.float64)
    covariance = np.cov(data, rowvar=False, bias=True)
    shrunk = 0.7 * covariance + 0.3 * np.trace(covariance) / 6 * np.eye(6)
    whitening = PCAWhitening.fit(training, shrinkage=0.3, eps=0.05)
    eigenvalues = np.sort(np.linalg.eigvalsh(shrunk))[::-1]
    np.testing.assert_allclose(whitening.eigenvalues, eigenvalues, rtol=1e-8)
    # P^T P = U (S + eps)^-1 U^T = (C_shrunk + eps I)^-1
    np.testing.assert_allclose(
        whitening.projection.T @ whitening.projection,
        np.linalg.inv(shrunk + 0.05 * np.eye(6)),
        rtol=1e-8,
    )


def test_save_load_roundtrip(training, tmp_path: Path):
    whitening = PCAWhitening.fit(training, dim=4)
    path = tmp_path / "whitening.npz"
    whitening.save(path)
    loaded = PCAWhitening.load(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["whitening.npz"]
    np.testing.assert_array_equal(loaded.transform(training), whitening.transform(training))
    assert (loaded.input_dim, loaded.output_dim) == (6, 4)


def test_bad_inputs_raise_clear_errors(training, tmp_path: Path):
    with pytest.raises(ValueError, match=r"dim=9 must lie in \[1, 6\]"):
        PCAWhitening.fit(training, dim=9)
    with pytest.raises(ValueError, match="shrinkage > 0"):
        PCAWhitening.fit(training[:4], dim=4)
    assert PCAWhitening.fit(training[:4], dim=4, shrinkage=0.1).output_dim == 4
    with pytest.raises(ValueError, match=r"\(M, 6\)"):
        PCAWhitening.fit(training).transform(np.zeros((2, 5)))
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        PCAWhitening.load(tmp_path / "missing.npz")
    np.savez(tmp_path / "other.npz", weights=np.zeros(3))
    with pytest.raises(ValueError, match="lacks mean, projection, eigenvalues"):
        PCAWhitening.load(tmp_path / "other.npz")
