"""Report figures hold the numbers they are given (read back from the matplotlib artists)."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from lookalike.report.analysis import ClassRecall
from lookalike.report.plots import (
    figure_to_png,
    per_class_recall_chart,
    predicted_class_chart,
    projection_scatter,
    similarity_histogram,
    training_curves,
)
from lookalike.report.projection import Projection


def _bar_heights(figure) -> list[float]:
    return [patch.get_height() for patch in figure.axes[0].patches]


def test_similarity_histogram_bins_and_threshold_line() -> None:
    rng = np.random.default_rng(0)
    positive, negative = rng.normal(0.8, 0.05, 200), rng.normal(0.2, 0.1, 1000)
    figure = similarity_histogram(positive, negative, "cosine", threshold=0.55, bins=20)
    both = np.concatenate([positive, negative])
    edges = np.linspace(both.min(), both.max(), 21)
    expected = np.concatenate([np.histogram(positive, edges, density=True)[0],
                               np.histogram(negative, edges, density=True)[0]])
    assert np.allclose(_bar_heights(figure), expected)
    lines = [line for line in figure.axes[0].lines if list(line.get_xdata()) == [0.55, 0.55]]
    assert len(lines) == 1
    assert len(similarity_histogram(positive, negative, "l2").axes[0].lines) == 0
    assert Image.open(io.BytesIO(figure_to_png(figure))).format == "PNG"


def test_similarity_histogram_with_no_positives() -> None:
    figure = similarity_histogram(np.zeros(0), np.array([1.0, 2.0, 2.5]), "l2", bins=3)
    assert np.allclose(_bar_heights(figure), np.histogram([1.0, 2.0, 2.5], 3, density=True)[0])


def test_per_class_chart_draws_recalls_in_order_and_truncates() -> None:
    classes = [ClassRecall(f"c{i}", 4, i % 5) for i in range(10)]
    figure = per_class_recall_chart(classes)
    widths = [patch.get_width() for patch in figure.axes[0].patches]
    assert widths == pytest.approx([c.recall for c in classes])
    truncated = per_class_recall_chart(classes, max_bars=4)
    labels = [t.get_text() for t in truncated.axes[0].get_yticklabels()]
    assert labels == ["c0 (4)", "c1 (4)", "c8 (4)", "c9 (4)"]


def test_training_curves_plot_each_column_against_step() -> None:
    history = pd.DataFrame({
        "epoch": [0, 0, 1, 1], "step": [10, 20, 30, 40],
        "train/loss": [1.0, 0.8, 0.6, 0.5], "val/loss": [np.nan, 0.9, np.nan, 0.7],
        "val/map@r": [np.nan, 0.4, np.nan, 0.6], "note": ["a", "b", "c", "d"],
    })
    figure = training_curves(history)
    assert [axes.get_title() for axes in figure.axes] == ["loss", "map@r"]
    lines = {line.get_label(): line for axes in figure.axes for line in axes.lines}
    assert set(lines) == {"train/loss", "val/loss", "val/map@r"}
    assert list(lines["val/loss"].get_xdata()) == [20, 40]
    assert list(lines["val/loss"].get_ydata()) == [0.9, 0.7]
    assert training_curves(history[["epoch", "note"]]) is None


def test_predicted_class_chart_draws_the_most_frequent_classes() -> None:
    counts = [("a", 5), ("b", 3), ("c", 2), ("d", 1)]
    assert _bar_heights(predicted_class_chart(counts)) == [5, 3, 2, 1]
    figure = predicted_class_chart(counts, max_bars=2)
    assert _bar_heights(figure) == [5, 3]
    assert [t.get_text() for t in figure.axes[0].get_xticklabels()] == ["a", "b"]
    assert "top 2 of 4 (the other classes: 3 queries)" in figure.axes[0].get_title()


def test_projection_scatter_one_series_per_group() -> None:
    points = np.arange(12, dtype=np.float32).reshape(6, 2)
    figure = projection_scatter(Projection(points, ["b", "a", "b", "a", "a", "c"], "pca", 6), "t")
    collections = figure.axes[0].collections
    assert [c.get_label() for c in collections] == ["a (3)", "b (2)", "c (1)"]
    assert np.array_equal(collections[0].get_offsets(), points[[1, 3, 4]])
