"""``lookalike wise-ft``: weight-space ensembling of a fine-tuned model with its pre-trained start."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from lookalike.cli.common import console, friendly_errors, parse_key_values, progress_bars
from lookalike.pipeline.wise_ft import DEFAULT_ALPHAS, RetrievalSet, wise_ft_curve


@friendly_errors
def wise_ft(
    pretrained: Annotated[Path, typer.Argument(help="Saved model fine-tuning started from.")],
    finetuned: Annotated[Path, typer.Argument(help="Saved fine-tuned model (same architecture).")],
    val_source: Annotated[str, typer.Option(help="Images that choose alpha (in-distribution validation).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for model/, curve.csv and curve.png.")] = Path("wise_ft"),
    val_protocol: Annotated[str, typer.Option(help="Protocol of --val-source.")] = "all_vs_all",
    val_arg: Annotated[list[str] | None, typer.Option(help="Protocol option of --val-source, key=value (repeatable).")] = None,
    val_part: Annotated[str, typer.Option(help="Part of its split: val or test.")] = "test",
    report_source: Annotated[list[str] | None, typer.Option(help="NAME=SOURCE scored on the same grid, all-vs-all (repeatable; e.g. ood=folder:flowers).")] = None,
    alpha: Annotated[list[float] | None, typer.Option(help="Mixing coefficient in [0, 1] (repeatable).")] = None,
    monitor: Annotated[str, typer.Option(help="Validation metric to maximise.")] = "map@r",
) -> None:
    """Interpolate two saved models, choose alpha on validation, write the curve over alpha."""
    select = RetrievalSet("val", val_source, val_protocol, parse_key_values(val_arg or []), val_part)
    reports = []
    for item in report_source or []:
        name, sep, source = item.partition("=")
        if not sep:
            raise ValueError(f"--report-source {item!r} is not NAME=SOURCE")
        reports.append(RetrievalSet(name, source))
    with progress_bars() as progress:
        outcome = wise_ft_curve(pretrained, finetuned, output, select, reports,
                                alpha or DEFAULT_ALPHAS, monitor, progress=progress)
    table = Table(title=f"WiSE-FT ({monitor})")
    columns = [key for key in outcome.rows[0] if key == "alpha" or key.endswith(f"/{monitor}")]
    for column in columns:
        table.add_column(column, justify="right")
    for row in outcome.rows:
        table.add_row(*(f"{row[column]:.4f}" for column in columns))
    console.print(table)
    console.print(f"alpha {outcome.best_alpha:g} chosen on validation; model: [bold]{outcome.model_dir}[/]")
    console.print(f"curve: {outcome.curve_csv}, {outcome.curve_plot}")
