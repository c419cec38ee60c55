"""``lookalike submission`` writes a competition file; ``lookalike submit`` uploads it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lookalike.cli.common import console, friendly_errors
from lookalike.embed.store import EmbeddingSet
from lookalike.index import load_index
from lookalike.report.submission import NO_MATCH_TOKEN, write_competition_json, write_kaggle_csv
from lookalike.report.submit import DEFAULT_TOKEN_ENV, SubmissionError, submit_file
from lookalike.search.topk import search


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
) -> None:
    """Write a Kaggle-style CSV or a competition JSON from an index and query embeddings."""
    query_set = EmbeddingSet.load(queries)
    index, metadata = load_index(index_folder, query_set.fingerprint)
    if threshold is None:
        threshold = metadata.threshold
    # Labels repeat down a ranking: search deeper so that k distinct ones exist.
    depth = min(metadata.ntotal, 3 * k if predict == "labels" else k)
    result = search(index, query_set.embeddings, depth)
    if output.suffix.lower() == ".json":
        write_competition_json(output, result, query_set.paths, metadata.paths, k=k,
                               rejection_threshold=threshold, no_match_token=no_match_token)
    elif output.suffix.lower() == ".csv":
        write_kaggle_csv(output, result, query_set.ids, metadata.ids, metadata.labels, predict=predict,  # type: ignore[arg-type]
                         k=k, rejection_threshold=threshold, no_match_token=no_match_token,
                         query_column=query_column, prediction_column=prediction_column)
    else:
        raise ValueError(f"cannot tell the format of {output}: name it .csv (Kaggle) or .json")
    rejected = "" if threshold is None else f", '{no_match_token}' below {threshold:.4f}"
    console.print(f"{len(query_set)} queries, top-{k}{rejected}: [bold]{output}[/]")


@friendly_errors
def submit(
    path: Annotated[Path, typer.Argument(help="Submission file to upload.")],
    url: Annotated[str, typer.Option(help="Endpoint that accepts submissions (http:// or https://).")],
    token_env: Annotated[str, typer.Option(help="Environment variable holding the API token.")] = DEFAULT_TOKEN_ENV,
    field: Annotated[str, typer.Option(help="Form field the file is sent in.")] = "file",
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the server.")] = 30.0,
) -> None:
    """POST a submission file with a bearer token read from an environment variable."""
    try:
        response = submit_file(path, url, token_env=token_env, field_name=field, timeout=timeout)
    except SubmissionError as error:
        raise ValueError(str(error)) from None
    console.print(f"submitted {path.name}: HTTP {response.status_code}")
    if response.body.strip():
        console.print(response.body.strip()[:2000], highlight=False)
