"""The ``lookalike`` command: one module per verb, each a thin wrapper over library functions."""

from __future__ import annotations

import typer

from lookalike.cli import (
    compare,
    demo,
    embed,
    embed_text,
    evaluate,
    export,
    index,
    predict,
    registries,
    report,
    search,
    serve,
    submission,
    submit_all,
    sweep,
    train,
    tune_threshold,
    wise_ft,
)
from lookalike.cli.common import OneLineUsageErrors

app = typer.Typer(
    name="lookalike",
    help="Train, evaluate and serve top-k image retrieval.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=OneLineUsageErrors,
)
app.command("train")(train.train)
app.command("embed")(embed.embed)
app.command("embed-text")(embed_text.embed_text)
app.command("index")(index.index)
app.command("search")(search.search)
app.command("evaluate")(evaluate.evaluate)
app.command("export")(export.export)
app.command("tune-threshold")(tune_threshold.tune_threshold)
app.command("report")(report.report)
app.command("submission")(submission.submission)
app.command("submit")(submission.submit)
app.command("submit-all")(submit_all.submit_all)
app.command("demo")(demo.demo)
app.command("serve")(serve.serve)
app.command("predict")(predict.predict)
app.command("wise-ft")(wise_ft.wise_ft)
app.command("sweep")(sweep.sweep)
app.command("compare")(compare.compare)
app.command("list")(registries.list_registered)

if __name__ == "__main__":
    app()
