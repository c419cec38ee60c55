"""The ``lookalike`` command: one module per verb, each a thin wrapper over library functions."""

from __future__ import annotations

import typer

from lookalike.cli import (
    demo,
    embed,
    evaluate,
    index,
    registries,
    report,
    search,
    submission,
    train,
    tune_threshold,
)

app = typer.Typer(
    name="lookalike",
    help="Train, evaluate and serve top-k image retrieval.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("train")(train.train)
app.command("embed")(embed.embed)
app.command("index")(index.index)
app.command("search")(search.search)
app.command("evaluate")(evaluate.evaluate)
app.command("tune-threshold")(tune_threshold.tune_threshold)
app.command("report")(report.report)
app.command("submission")(submission.submission)
app.command("submit")(submission.submit)
app.command("demo")(demo.demo)
app.command("list")(registries.list_registered)

if __name__ == "__main__":
    app()
