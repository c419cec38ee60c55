"""``lookalike predict``: the top-k classes of each query from a trained model's classifier head."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lookalike.cli.common import console, friendly_errors, progress_bars
from lookalike.pipeline.predict import PredictSpec
from lookalike.pipeline.predict import predict as run_predict
from lookalike.report.submission import NO_MATCH_TOKEN


@friendly_errors
def predict(
    model: Annotated[Path, typer.Argument(help="Saved model folder with its classifier (a `lookalike train` run's model/).")],
    queries: Annotated[str, typer.Argument(help="Query embeddings of that model, or images (a folder, CSV ...) to embed with it.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Kaggle CSV: Id,Predicted (space-separated classes).")] = Path("predictions.csv"),
    k: Annotated[int, typer.Option("-k", "--k", help="Classes per query.")] = 5,
    threshold: Annotated[float | None, typer.Option(help="Probability below which 'no match' is inserted (see tune-threshold --classifier).")] = None,
    by: Annotated[str, typer.Option(help="head (classifier probabilities), knn (gallery votes) or fusion.")] = "head",
    gallery: Annotated[Path | None, typer.Option(help="Labelled gallery embeddings, for --by knn/fusion.")] = None,
    vote_weight: Annotated[float, typer.Option(help="Share of the kNN votes in the fusion.")] = 0.5,
    neighbours: Annotated[int, typer.Option(help="Gallery neighbours that vote.")] = 20,
    no_match_token: Annotated[str, typer.Option(help="Written for 'no match'.")] = NO_MATCH_TOKEN,
) -> None:
    """Answer each query with its most probable classes, 'no match' below the threshold."""
    spec = PredictSpec(by=by, k=k, threshold=threshold, vote_weight=vote_weight, neighbours=neighbours)
    with progress_bars() as progress:
        outcome = run_predict(model, queries, output, spec, gallery, no_match_token, progress)
    console.print(f"{len(outcome.query_ids)} queries answered from {len(outcome.answers.classes)} classes ({by})")
    console.print(f"written to [bold]{outcome.path}[/]")
