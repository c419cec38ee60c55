"""Matplotlib figures of a run's report, rendered off-screen (Agg) to PNG bytes.

Figures are built as :class:`matplotlib.figure.Figure` objects, never through ``pyplot``, so no
global state or GUI backend is touched and a report can be built from any thread.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from lookalike.report.analysis import ClassRecall
from lookalike.report.projection import Projection

MAX_LEGEND_GROUPS = 20
POSITIVE_COLOUR = "#2ca02c"
NEGATIVE_COLOUR = "#d62728"


def figure_to_png(figure: Figure, dpi: int = 100) -> bytes:
    """The figure rendered by Agg as PNG bytes."""
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    return buffer.getvalue()


def _shown_classes(count: int, max_bars: int) -> np.ndarray:
    """Positions shown when only ``max_bars`` fit: the first and last halves of the order."""
    if count <= max_bars:
        return np.arange(count)
    half = max_bars // 2
    return np.concatenate([np.arange(half), np.arange(count - (max_bars - half), count)])


def per_class_recall_chart(classes: Sequence[ClassRecall], max_bars: int = 60) -> Figure:
    """Horizontal bars of recall@1 per class in the given order (worst first).

    With more than ``max_bars`` classes, the first and last ``max_bars / 2`` are drawn.
    """
    shown = [classes[i] for i in _shown_classes(len(classes), max_bars)]
    figure = Figure(figsize=(7, max(2.0, 0.22 * len(shown) + 1)))
    axes = figure.add_subplot()
    positions = np.arange(len(shown))
    axes.barh(positions, [c.recall for c in shown], color="#1f77b4")
    axes.set_yticks(positions, [f"{c.label} ({c.count})" for c in shown], fontsize=7)
    axes.invert_yaxis()
    axes.set_xlim(0, 1)
    axes.set_xlabel("recall@1")
    title = "Recall@1 per query class (queries)"
    if len(shown) < len(classes):
        title += f": worst and best {len(shown)} of {len(classes)}"
    axes.set_title(title)
    return figure


def _curve_groups(columns: Sequence[str]) -> dict[str, list[str]]:
    """Metric columns grouped by the name after their prefix (``train/loss``, ``val/loss``)."""
    groups: dict[str, list[str]] = {}
    for column in columns:
        groups.setdefault(column.rsplit("/", 1)[-1], []).append(column)
    return groups


def training_curves(history: pd.DataFrame) -> Figure | None:
    """One panel per metric name, each split (``train/``, ``val/``) a line, against step or epoch.

    Returns:
        The figure, or None when ``history`` holds no numeric metric column.
    """
    x_name = next(
        (name for name in ("step", "epoch") if name in history and history[name].notna().any()),
        None,
    )
    metrics = [
        column
        for column in history.columns
        if column not in ("step", "epoch")
        and "n_queries" not in column  # counts, not curves
        and pd.api.types.is_numeric_dtype(history[column])
        and history[column].notna().any()
    ]
    if not metrics:
        return None
    groups = _curve_groups(metrics)
    columns = min(3, len(groups))
    rows = -(-len(groups) // columns)
    figure = Figure(figsize=(4.2 * columns, 3.2 * rows))
    for number, (name, members) in enumerate(groups.items(), start=1):
        axes = figure.add_subplot(rows, columns, number)
        for column in members:
            values = history[[column] + ([x_name] if x_name else [])].dropna()
            x = values[x_name] if x_name else values.index
            axes.plot(x, values[column], marker="." if len(values) < 50 else None, label=column)
        axes.set_title(name)
        axes.set_xlabel(x_name or "row")
        axes.legend(fontsize=7)
        axes.grid(alpha=0.3)
    figure.tight_layout()
    return figure


def projection_scatter(projection: Projection, title: str) -> Figure:
    """Scatter of a 2-D map, one colour per group (legend when there are few groups)."""
    figure = Figure(figsize=(7, 6))
    axes = figure.add_subplot()
    names = sorted(set(projection.groups))
    cmap = colormaps["tab20" if len(names) > 10 else "tab10"]
    palette = [cmap(i % cmap.N) for i in range(len(names))]
    groups = np.array(projection.groups)
    size = 4 if len(groups) > 1000 else 10
    for colour, name in zip(palette, names):
        mask = groups == name
        axes.scatter(
            projection.points[mask, 0],
            projection.points[mask, 1],
            s=size,
            color=colour,
            label=f"{name} ({int(mask.sum())})",
            alpha=0.7,
            linewidths=0,
        )
    if len(names) <= MAX_LEGEND_GROUPS:
        axes.legend(fontsize=7, markerscale=2, loc="best")
    axes.set_title(title)
    axes.set_xticks([])
    axes.set_yticks([])
    return figure


def predicted_class_chart(counts: Sequence[tuple[str, int]], max_bars: int = 40) -> Figure:
    """Bars of how often each class is the top-1 answer, most frequent first.

    Only the ``max_bars`` most frequent classes are drawn; the title says how many queries the
    other classes received.
    """
    shown = list(counts[:max_bars])
    figure = Figure(figsize=(max(5.0, 0.25 * len(shown) + 2), 3.6))
    axes = figure.add_subplot()
    positions = np.arange(len(shown))
    axes.bar(positions, [count for _, count in shown], color="#9467bd")
    axes.set_xticks(positions, [label for label, _ in shown], rotation=70, ha="right", fontsize=7)
    axes.set_ylabel("queries")
    title = "Predicted top-1 classes"
    if len(counts) > max_bars:
        rest = sum(count for _, count in counts[max_bars:])
        title += f": top {max_bars} of {len(counts)} (the other classes: {rest} queries)"
    axes.set_title(title, fontsize=10)
    figure.tight_layout()
    return figure


def similarity_histogram(
    positive: np.ndarray,
    negative: np.ndarray,
    metric: str,
    threshold: float | None = None,
    bins: int = 50,
) -> Figure:
    """Density histograms of positive and negative pair scores on shared bins.

    Args:
        positive: ``(P,)`` scores of same-class pairs.
        negative: ``(M,)`` scores of different-class pairs.
        metric: The metric's name, for the x label.
        threshold: The rejection threshold, drawn as a vertical dashed line.
        bins: Number of bins spanning both sets (and the threshold).
    """
    values = [np.asarray(v, dtype=np.float64) for v in (positive, negative)]
    finite = np.concatenate([v[np.isfinite(v)] for v in values] + [np.zeros(0)])
    if threshold is not None:
        finite = np.append(finite, threshold)
    low, high = (finite.min(), finite.max()) if finite.size else (0.0, 1.0)
    edges = np.linspace(low, high if high > low else low + 1.0, bins + 1)
    figure = Figure(figsize=(7, 3.6))
    axes = figure.add_subplot()
    for scores, colour, name in zip(
        values, (POSITIVE_COLOUR, NEGATIVE_COLOUR), ("positive pairs", "negative pairs")
    ):
        if scores.size:
            axes.hist(
                scores, bins=edges, density=True, alpha=0.55, color=colour,
                label=f"{name} ({scores.size})",
            )
    if threshold is not None:
        axes.axvline(threshold, color="black", linestyle="--", label=f"threshold {threshold:g}")
    axes.set_xlabel(f"{metric} score")
    axes.set_ylabel("density")
    axes.legend(fontsize=8)
    axes.set_title("Similarity of positive and negative pairs")
    return figure
