"""``lookalike report``: one self-contained HTML page for a run folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lookalike.cli.common import console, friendly_errors
from lookalike.report import build_report


@friendly_errors
def report(
    run_dir: Annotated[Path, typer.Argument(help="Run folder written by `evaluate` or `train`.")],
    output: Annotated[Path | None, typer.Option("--output", "-o", help="HTML file (default RUN_DIR/report.html).")] = None,
    max_points: Annotated[int, typer.Option(help="Points in the embedding map (UMAP, or PCA without umap-learn).")] = 3000,
    grid_queries: Annotated[int, typer.Option(help="Queries in each of the best / worst / random grids.")] = 5,
    k: Annotated[int | None, typer.Option("-k", "--k", help="Results shown per query (default: the run's k).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the random queries and subsampling.")] = 0,
) -> None:
    """Metrics, per-class recall, curves, embedding map, query→result grids, confusions, histograms."""
    path = build_report(run_dir, output, max_points=max_points, grid_queries=grid_queries, k=k, seed=seed)
    console.print(f"report written to [bold]{path}[/]")
