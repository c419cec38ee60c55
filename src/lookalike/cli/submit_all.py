"""``lookalike submit-all``: send every epoch's results file of a run, recording each reply."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lookalike.cli.common import console, friendly_errors, progress_bars
from lookalike.pipeline.submit_all import SCORES_FILE
from lookalike.pipeline.submit_all import submit_all as submit_all_files
from lookalike.report.submit import DEFAULT_TOKEN_ENV, SubmissionError


@friendly_errors
def submit_all(
    run_dir: Annotated[Path, typer.Argument(help="Run folder trained with trainer.keep_every_epoch (or a folder of runs).")],
    url: Annotated[str, typer.Option(help="Endpoint that accepts submissions (https://; http:// with --allow-insecure).")],
    token_env: Annotated[str, typer.Option(help="Environment variable holding the API token.")] = DEFAULT_TOKEN_ENV,
    field: Annotated[str, typer.Option(help="Form field the file is sent in.")] = "file",
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the server, per file.")] = 30.0,
    score_key: Annotated[str | None, typer.Option(help="Dotted key of the score in a JSON reply (default: score, then public_score).")] = None,
    interval: Annotated[float, typer.Option(help="Seconds to wait between two submissions.")] = 0.0,
    allow_insecure: Annotated[bool, typer.Option("--allow-insecure", help="Allow a plain http:// URL (the token travels unencrypted).")] = False,
) -> None:
    """Submit every results_epoch_N.json not yet submitted; replies go to submission_scores.csv."""
    try:
        with progress_bars() as progress:
            outcome = submit_all_files(
                run_dir, url, token_env=token_env, field_name=field, timeout=timeout,
                allow_insecure=allow_insecure, score_key=score_key, interval=interval,
                progress=progress,
            )
    except SubmissionError as error:
        raise ValueError(str(error)) from None
    for record in outcome.submitted:
        score = "no score" if record.score is None else f"score {record.score:g}"
        console.print(f"{record.file}: HTTP {record.status}, {score}", highlight=False)
    console.print(
        f"{len(outcome.submitted)} submitted, {len(outcome.skipped)} already submitted; "
        f"replies in [bold]{run_dir / SCORES_FILE}[/]"
    )
