"""``lookalike submission`` writes a competition file; ``lookalike submit`` uploads it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lookalike.cli.common import console, friendly_errors, progress_bars
from lookalike.pipeline.submission import write_submission
from lookalike.report.submission import NO_MATCH_TOKEN
from lookalike.report.submit import DEFAULT_TOKEN_ENV, SubmissionError, submit_file


@friendly_errors
def submission(
    index_folder: Annotated[Path, typer.Argument(help="Gallery index folder written by `lookalike index`.")],
    queries: Annotated[Path, typer.Argument(help="Query embedding folder (from `lookalike embed`).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="submission.csv (Kaggle) or .json (competition JSON).")] = Path("submission.csv"),
    k: Annotated[int, typer.Option("-k", "--k", help="Predictions per query.")] = 5,
    predict: Annotated[str, typer.Option(help="Kaggle CSV: 'labels' (distinct classes) or 'ids'.")] = "labels",
    no_match_token: Annotated[str, typer.Option(help="Written for 'no match'.")] = NO_MATCH_TOKEN,
    threshold: Annotated[float | None, typer.Option(help="Rejection threshold (default: the one stored with the index).")] = None,
    query_column: Annotated[str, typer.Option(help="Kaggle CSV: query column name.")] = "Id",
    prediction_column: Annotated[str, typer.Option(help="Kaggle CSV: prediction column name.")] = "Predicted",
    json_names: Annotated[str, typer.Option(help="Competition JSON: name images by 'basename', 'relpath' (unique where file names repeat) or 'id'.")] = "basename",
) -> None:
    """Write a Kaggle-style CSV or a competition JSON from an index and query embeddings."""
    with progress_bars() as progress:
        outcome = write_submission(
            index_folder,
            queries,
            output,
            k=k,
            predict=predict,  # type: ignore[arg-type]
            no_match_token=no_match_token,
            threshold=threshold,
            query_column=query_column,
            prediction_column=prediction_column,
            progress=progress,
            names=json_names,  # type: ignore[arg-type]
        )
    rejected = "" if outcome.threshold is None else f", '{no_match_token}' below {outcome.threshold:.4f}"
    console.print(f"{outcome.queries} queries, top-{k}{rejected}: [bold]{outcome.path}[/]")


@friendly_errors
def submit(
    path: Annotated[Path, typer.Argument(help="Submission file to upload.")],
    url: Annotated[str, typer.Option(help="Endpoint that accepts submissions (https://; http:// with --allow-insecure).")],
    token_env: Annotated[str, typer.Option(help="Environment variable holding the API token.")] = DEFAULT_TOKEN_ENV,
    field: Annotated[str, typer.Option(help="Form field the file is sent in.")] = "file",
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the server.")] = 30.0,
    allow_insecure: Annotated[bool, typer.Option("--allow-insecure", help="Allow a plain http:// URL (the token travels unencrypted).")] = False,
) -> None:
    """POST a submission file with a bearer token read from an environment variable."""
    try:
        response = submit_file(path, url, token_env=token_env, field_name=field, timeout=timeout,
                               allow_insecure=allow_insecure)
    except SubmissionError as error:
        raise ValueError(str(error)) from None
    console.print(f"submitted {path.name}: HTTP {response.status_code}")
    if response.body.strip():
        console.print(response.body.strip()[:2000], highlight=False)
