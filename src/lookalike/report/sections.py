"""The sections of the HTML report, each a function from a run's data to an HTML fragment.

A section whose inputs are absent returns a note saying what is missing instead of failing, so
a report of a partial run still shows everything that exists.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from lookalike.embed.store import EmbeddingSet
from lookalike.metrics.metric_choice import METRIC_CHOICE_FILE, MetricChoice
from lookalike.report.analysis import (
    UNLABELLED,
    RankingAnalysis,
    confused_pairs,
    per_class_recall,
    predicted_class_counts,
    random_rows,
    select_queries,
    similarity_samples,
)
from lookalike.report.grids import GridRow, GridTile, encode_image, render_grid
from lookalike.report.markup import escape, image_tag, note, table
from lookalike.report.plots import (
    figure_to_png,
    per_class_recall_chart,
    predicted_class_chart,
    projection_scatter,
    similarity_histogram,
    training_curves,
)
from lookalike.report.projection import project_sets
from lookalike.report.run_folder import RunFolder

NO_MATCH_ID = "no_match"
SIMILARITY_PAIRS = 100_000
CONFUSED_PAIRS = 20
NEEDS_EMBEDDINGS = "needs labelled query and gallery embeddings (run.json); none were found"


def metrics_section(folder: RunFolder) -> str:
    """The metrics table of ``metrics.json`` and the variants table of ``variants.csv``."""
    parts = []
    if folder.metrics:
        rows = [(name, value) for name, value in folder.metrics.items()]
        parts.append(table(["metric", "value"], rows, table_id="metrics-table"))
    else:
        parts.append(note("metrics.json is absent: no summary metrics (unlabelled queries?)"))
    if folder.variants is not None:
        parts.append("<h3>Post-processing variants</h3>")
        parts.append(_variants_table(folder.variants))
    if (folder.root / METRIC_CHOICE_FILE).is_file():
        parts.append(metric_choice_table(MetricChoice.load(folder.root / METRIC_CHOICE_FILE)))
    return "\n".join(parts)


def metric_choice_table(choice: MetricChoice) -> str:
    """``metric_choice.json`` (``index.metric=auto``): every candidate metric's scores on the
    split it was chosen on, the chosen one in bold."""
    columns = [c for c in ("recall@1", "recall@5", "map", "map@r") if c != choice.monitor]
    header, rows = choice.table([choice.monitor, *columns])
    bold = [[row[-1] == "yes"] * len(row) for row in rows]
    heading = (
        f"<h3>Metric choice: {escape(choice.metric)} (best {escape(choice.monitor)} on the "
        f"{escape(choice.split)} split, {choice.n_queries} queries)</h3>"
    )
    extra = note(choice.note) if choice.note else ""
    return heading + table(header, rows, table_id="metric-choice-table", bold=bold) + extra


def _variants_table(variants: pd.DataFrame) -> str:
    columns = list(variants.columns)
    # Every retrieval metric is higher-is-better; counts (n_queries ...) are not compared.
    compared = [
        c for c in columns
        if c != "variant" and not c.startswith("n_") and pd.api.types.is_numeric_dtype(variants[c])
    ]
    best = {c: variants[c].max() for c in compared}
    rows = variants.astype(object).where(variants.notna(), "").values.tolist()
    bold = [
        [c in best and value != "" and value == best[c] for c, value in zip(columns, row)]
        for row in rows
    ]
    return table(columns, rows, table_id="variants-table", bold=bold)


def per_class_section(query: EmbeddingSet | None, analysis: RankingAnalysis | None) -> str:
    """Recall@1 per query class: a bar chart and a table, worst class first."""
    if analysis is None or query is None:
        return note(f"Per-class recall {NEEDS_EMBEDDINGS}.")
    labels = [query.labels[row] for row in analysis.query_rows.tolist()]
    per_query = analysis.per_query
    classes = per_class_recall(labels, per_query.values["recall@1"], per_query.evaluated)
    if not classes:
        return note("No query has a relevant gallery item: per-class recall is undefined.")
    chart = image_tag(figure_to_png(per_class_recall_chart(classes)), alt="recall@1 per class")
    rows = [(c.label, c.count, c.hits, c.recall) for c in classes]
    return chart + '<div class="scroll">' + table(
        ["class", "queries", "correct top-1", "recall@1"], rows, table_id="per-class-table"
    ) + "</div>"


def training_section(folder: RunFolder) -> str:
    """Training curves from ``history.csv``."""
    if folder.history is None:
        return note("history.csv is absent: no training curves (an evaluation-only run).")
    figure = training_curves(folder.history)
    if figure is None:
        return note("history.csv holds no numeric metric column.")
    return image_tag(figure_to_png(figure), alt="training curves")


def projection_section(
    query: EmbeddingSet | None,
    gallery: EmbeddingSet | None,
    train: EmbeddingSet | None,
    metric: str,
    exclude_self: bool,
    max_points: int,
    seed: int,
) -> str:
    """A 2-D map of the embeddings: train and test apart when there are train rows, else classes."""
    test_sets = [s for s in (gallery, query) if s is not None]
    if not test_sets:
        return note("The embedding map needs embeddings (run.json); none were found.")
    if exclude_self and gallery is not None:
        test_sets = [gallery]
    elif len(test_sets) == 2:
        # Queries whose id is in the gallery already appear through it.
        known = set(test_sets[0].ids)
        extra = [row for row, image_id in enumerate(test_sets[1].ids) if image_id not in known]
        test_sets = [test_sets[0], test_sets[1].select(extra)]
    test_rows = np.concatenate([s.embeddings for s in test_sets])
    if train is not None:
        sets = [(train.embeddings, ["train"] * len(train)), (test_rows, ["test"] * len(test_rows))]
        subject = "train and test embeddings"
    else:
        labels = [UNLABELLED if label is None else label for s in test_sets for label in s.labels]
        sets = [(test_rows, labels)]
        subject = "test embeddings by class"
    projection = project_sets(sets, metric=metric, max_points=max_points, seed=seed)
    shown = f"{len(projection.points)} of {projection.total}"
    title = f"{projection.method.upper()} of {shown} {subject}"
    return image_tag(figure_to_png(projection_scatter(projection, title)), alt="embedding map")


def _served_rankings(results: pd.DataFrame | None) -> dict[str, pd.DataFrame]:
    if results is None:
        return {}
    return {str(query_id): rows for query_id, rows in results.groupby("query_id", sort=False)}


def _grid_row(
    row: int,
    folder: RunFolder,
    query: EmbeddingSet,
    gallery: EmbeddingSet,
    served: dict[str, pd.DataFrame],
    exact: dict[int, tuple[np.ndarray, np.ndarray, float, int]],
    gallery_rows: dict[str, int],
    k: int,
) -> tuple[GridRow, list[object]] | None:
    """Query ``row``'s grid row from its served ranking (else the exact one), and its summary."""
    query_id, label = query.ids[row], query.labels[row]
    ap, first = (exact[row][2], exact[row][3]) if row in exact else ("n/a", 0)
    if query_id in served:
        ranking = served[query_id].head(k)
        entries = list(zip(ranking["gallery_id"], ranking["gallery_path"], ranking["score"]))
        source = "served"
    elif row in exact:
        indices, scores = exact[row][0][:k], exact[row][1][:k]
        entries = [(gallery.ids[i], gallery.paths[i], s) for i, s in zip(indices, scores) if i >= 0]
        source = "exact"
    else:
        return None
    tiles = []
    for gallery_id, gallery_path, score in entries:
        score_text = "" if pd.isna(score) else f"{float(score):.3f}"
        if gallery_id == NO_MATCH_ID:
            tiles.append(GridTile(None, f"no match\n{score_text}", "no_match"))
            continue
        gallery_row = gallery_rows.get(str(gallery_id))
        gallery_label = None if gallery_row is None else gallery.labels[gallery_row]
        status = "correct" if label is not None and gallery_label == label else "wrong"
        path = gallery_path or (None if gallery_row is None else gallery.paths[gallery_row])
        tiles.append(
            GridTile(
                folder.resolve_image(path), f"{gallery_label or UNLABELLED}\n{score_text}", status
            )
        )
    caption = f"{label or UNLABELLED}\n{query_id}"
    summary = [query_id, label or UNLABELLED, ap, first or "none", source]
    return GridRow(folder.resolve_image(query.paths[row]), caption, tiles), summary


def grids_section(
    folder: RunFolder,
    query: EmbeddingSet | None,
    gallery: EmbeddingSet | None,
    analysis: RankingAnalysis | None,
    k: int,
    grid_queries: int,
    seed: int,
) -> str:
    """Query → top-k grids of the best, worst and random queries by average precision."""
    if query is None or gallery is None:
        return note(f"Query grids {NEEDS_EMBEDDINGS}.")
    if grid_queries == 0:
        return note("Query grids were turned off (grid_queries=0).")
    served = _served_rankings(folder.results)
    exact: dict[int, tuple[np.ndarray, np.ndarray, float, int]] = {}
    groups: dict[str, np.ndarray] = {}
    if analysis is not None:
        per_query = analysis.per_query
        for position, row in enumerate(analysis.query_rows.tolist()):
            exact[row] = (
                per_query.neighbours.indices[position],
                per_query.neighbours.scores[position],
                float(per_query.values["map"][position]),
                int(per_query.first_positive_rank[position]),
            )
        evaluated = np.flatnonzero(per_query.evaluated)
        chosen = select_queries(
            per_query.values["map"][evaluated],
            per_query.first_positive_rank[evaluated],
            grid_queries,
        )
        groups = {name: analysis.query_rows[evaluated[p]] for name, p in chosen.items()}
    ranked = [row for row, image_id in enumerate(query.ids) if image_id in served or row in exact]
    shown = np.concatenate([np.zeros(0, np.int64), *groups.values()])
    avoid = np.flatnonzero(np.isin(ranked, shown))
    picks = random_rows(len(ranked), grid_queries, seed, avoid=avoid)
    groups["random"] = np.asarray(ranked, dtype=np.int64)[picks]
    gallery_rows = {image_id: row for row, image_id in enumerate(gallery.ids)}
    titles = {"best": "Best queries", "worst": "Worst queries", "random": "Random queries"}
    parts = [
        note(
            "Ranked by average precision; borders: blue query, green correct, red wrong, "
            "grey no match. Rankings are the served ones (results.csv) where present."
        )
    ]
    for name in ("best", "worst", "random"):
        built = [
            item for row in groups.get(name, np.zeros(0, np.int64)).tolist()
            if (item := _grid_row(row, folder, query, gallery, served, exact, gallery_rows, k))
        ]
        parts.append(f"<h3>{escape(titles[name])}</h3>")
        if not built:
            parts.append(note("No query to show."))
            continue
        grid_rows = [grid_row for grid_row, _ in built]
        unreadable = sum(
            not Path(path).is_file()
            for path in [r.query_path for r in grid_rows]
            + [t.path for r in grid_rows for t in r.results if t.status != "no_match"]
            if path is not None
        )
        if unreadable:
            parts.append(note(f"{unreadable} image file(s) not found: shown as grey tiles."))
        grid = render_grid(grid_rows)
        parts.append(image_tag(encode_image(grid, "JPEG"), "image/jpeg", alt=titles[name]))
        parts.append(table(
            ["query", "class", "average precision", "first correct rank", "ranking"],
            [summary for _, summary in built],
        ))
    return "\n".join(parts)


def confusion_section(query: EmbeddingSet | None, analysis: RankingAnalysis | None) -> str:
    """The most frequent (query class, wrong top-1 class) pairs."""
    if analysis is None or query is None:
        return note(f"Confused classes {NEEDS_EMBEDDINGS}.")
    labels = [query.labels[row] for row in analysis.query_rows.tolist()]
    pairs = confused_pairs(labels, analysis.top1_labels, CONFUSED_PAIRS)
    if not pairs:
        return note("Every query's top-1 result has its class: nothing is confused.")
    return table(["query class", "top-1 class", "queries"], pairs, table_id="confusion-table")


def predicted_section(analysis: RankingAnalysis | None) -> str:
    """The distribution of the classes returned first."""
    if analysis is None:
        return note(f"Predicted classes {NEEDS_EMBEDDINGS}.")
    counts = predicted_class_counts(analysis.top1_labels)
    if not counts:
        return note("No query has a top-1 result.")
    return image_tag(figure_to_png(predicted_class_chart(counts)), alt="predicted top-1 classes")


def similarity_section(
    query: EmbeddingSet | None,
    gallery: EmbeddingSet | None,
    metric: str,
    exclude_self: bool,
    threshold: float | None,
    seed: int,
) -> str:
    """Histograms of positive and negative pair scores, the threshold marked."""
    if query is None or gallery is None:
        return note("Similarity histograms need query and gallery embeddings (run.json).")
    samples = similarity_samples(query, gallery, metric, exclude_self, SIMILARITY_PAIRS, seed)
    figure = similarity_histogram(samples.positive, samples.negative, metric, threshold)
    how = "every pair" if samples.exhaustive else f"a sample of pairs (seed {seed})"
    text = note(
        f"{len(samples.positive)} positive and {len(samples.negative)} negative pairs from {how}"
        + (f"; dashed line: the rejection threshold {threshold:g}." if threshold is not None
           else ".")
    )
    return image_tag(figure_to_png(figure), alt="similarity histograms") + text


def skipped_section(folder: RunFolder) -> str:
    """The images a job could not read."""
    if not folder.skipped:
        absent = folder.skipped is None
        return note("skipped.csv is absent." if absent else "No image was skipped.")
    rows = [
        (entry.get("id", ""), entry.get("path", ""), entry.get("reason", ""))
        for entry in folder.skipped
    ]
    return table(["id", "path", "reason"], rows, table_id="skipped-table")


def config_section(folder: RunFolder) -> str:
    """``config.yaml`` as it was saved."""
    if folder.config_text is None:
        return note("config.yaml is absent.")
    return f"<pre>{escape(folder.config_text)}</pre>"
