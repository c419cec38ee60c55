"""2-D maps: proportional subsampling, PCA against sklearn, and the fallback without umap-learn."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from lookalike.report.projection import pca_2d, project_2d, project_sets, subsample


def test_subsample_is_proportional_seeded_and_bounded() -> None:
    kept = subsample([3000, 1000], max_points=400, seed=0)
    assert [len(k) for k in kept] == [300, 100]
    assert all(np.all(np.diff(k) > 0) and k.max() < n for k, n in zip(kept, [3000, 1000]))
    again = subsample([3000, 1000], max_points=400, seed=0)
    assert all(np.array_equal(a, b) for a, b in zip(kept, again))
    assert [len(k) for k in subsample([5, 7], max_points=100)] == [5, 7]
    assert [len(k) for k in subsample([10_000, 2], max_points=100)] == [99, 1]
    with pytest.raises(ValueError, match="max_points"):
        subsample([1], 0)


@pytest.mark.parametrize("shape", [(300, 16), (12, 40)])
def test_pca_matches_sklearn_up_to_sign(shape: tuple[int, int]) -> None:
    decomposition = pytest.importorskip("sklearn.decomposition")
    rng = np.random.default_rng(0)
    rows = rng.standard_normal(shape) * np.linspace(5, 0.1, shape[1]) + 3.0
    ours = pca_2d(rows.astype(np.float32))
    reference = decomposition.PCA(n_components=2).fit_transform(rows)
    for component in range(2):
        correlation = np.corrcoef(ours[:, component], reference[:, component])[0, 1]
        assert abs(correlation) > 0.999
        assert np.allclose(np.abs(ours[:, component]), np.abs(reference[:, component]), atol=1e-3)


def test_falls_back_to_pca_without_umap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "umap", None)  # `import umap` raises ImportError
    rows = np.random.default_rng(1).standard_normal((50, 8)).astype(np.float32)
    points, method = project_2d(rows, "auto", seed=0)
    assert method == "pca" and points.shape == (50, 2)
    assert np.allclose(points, pca_2d(rows))
    with pytest.raises(ImportError, match="umap-learn is not installed"):
        project_2d(rows, "umap")
    with pytest.raises(ValueError, match="valid names: auto, pca, umap"):
        project_2d(rows, "tsne")


def test_project_sets_keeps_groups_with_their_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "umap", None)
    rng = np.random.default_rng(2)
    train = rng.standard_normal((40, 4)) + [10, 0, 0, 0]
    test = rng.standard_normal((20, 4)) - [10, 0, 0, 0]
    projection = project_sets([(train, ["train"] * 40), (test, ["test"] * 20)], metric="l2",
                              max_points=30, seed=0)
    assert projection.method == "pca" and projection.total == 60
    assert projection.groups == ["train"] * 20 + ["test"] * 10
    # The first principal component separates the two well-apart clouds.
    first = projection.points[:, 0]
    train_side = np.sign(first[:20])
    assert abs(train_side.sum()) == 20 and (np.sign(first[20:]) == -train_side[0]).all()


@pytest.mark.slow
def test_umap_projection_when_installed() -> None:
    pytest.importorskip("umap")
    rows = np.random.default_rng(3).standard_normal((60, 8)).astype(np.float32)
    points, method = project_2d(rows, "auto", seed=0)
    assert method == "umap" and points.shape == (60, 2) and np.isfinite(points).all()
