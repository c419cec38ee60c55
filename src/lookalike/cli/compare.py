"""``lookalike compare``: the ablation table of many run folders (see
:mod:`lookalike.report.compare`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from lookalike.cli.common import console, friendly_errors
from lookalike.report.compare import (
    DESCRIPTION_COLUMNS,
    TIME_COLUMNS,
    charted_metrics,
    compare_runs,
)
from lookalike.report.markup import format_value


@friendly_errors
def compare(
    runs: Annotated[list[Path], typer.Argument(help="Run folders of lookalike train / evaluate.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder of compare.csv and compare.html.")] = Path("runs/compare"),
    verify: Annotated[bool, typer.Option(help="Check each run against its manifest first.")] = True,
) -> None:
    """One table (CSV, and HTML with a bar chart) of every run's metrics, model, loss and times."""
    result = compare_runs(runs, output, verify=verify)
    shown = [*DESCRIPTION_COLUMNS, *charted_metrics(result.rows), *TIME_COLUMNS]
    view = Table(title="Runs compared")
    for column in shown:
        view.add_column(column)
    for row in result.rows:
        view.add_row(*["" if row.get(c) is None else format_value(row[c]) for c in shown])
    console.print(view)
    console.print(f"table: [bold]{result.csv_path}[/]")
    console.print(f"page:  [bold]{result.html_path}[/]")
