"""``lookalike tune-threshold``: the "no match" threshold that maximises a metric on validation data,
of similarity scores (kNN answers) or, with ``--classifier``, of class probabilities (head answers)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from lookalike.cli.common import console, friendly_errors, progress_bars
from lookalike.pipeline.open_set import RejectionSpec, tune_and_save_threshold
from lookalike.pipeline.predict import PredictSpec, tune_class_threshold


@friendly_errors
def tune_threshold(
    query_embeddings: Annotated[Path, typer.Option(help="Validation query embeddings (unlabelled rows are distractors).")],
    gallery_embeddings: Annotated[Path | None, typer.Option(help="Validation gallery embeddings (not needed for --classifier with --by head).")] = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for threshold.json and the curve.")] = Path("threshold"),
    objective: Annotated[str, typer.Option(help="map@K (e.g. map@5), weighted_topk or f1.")] = "map@5",
    holdout_fraction: Annotated[float, typer.Option(help="Share of classes held out as distractors when the queries have none.")] = 0.3,
    percentile: Annotated[float, typer.Option(help="Percentile rule shown for comparison.")] = 90.0,
    metric: Annotated[str, typer.Option(help="cosine, ip, l2 or l1.")] = "cosine",
    seed: Annotated[int, typer.Option(help="Seed of the held-out classes.")] = 0,
    index: Annotated[Path | None, typer.Option(help="Index folder to store the threshold in (used by search and evaluate).")] = None,
    classifier: Annotated[Path | None, typer.Option(help="Tune the probability threshold of this model's class answers (lookalike predict) instead.")] = None,
    by: Annotated[str, typer.Option(help="With --classifier: head, knn or fusion answers.")] = "head",
    vote_weight: Annotated[float, typer.Option(help="With --by fusion: share of the kNN votes.")] = 0.5,
) -> None:
    """Tune the rejection threshold on validation queries and gallery; optionally store it in an index."""
    spec = RejectionSpec(objective=objective, holdout_fraction=holdout_fraction, percentile=percentile, seed=seed)
    with progress_bars() as progress:
        if classifier is not None:
            answers = PredictSpec(by=by, vote_weight=vote_weight, metric=metric)
            saved = tune_class_threshold(classifier, query_embeddings, answers, spec, output,
                                         gallery_embeddings, progress)
        elif gallery_embeddings is None:
            raise ValueError("--gallery-embeddings is needed to tune a similarity threshold")
        else:
            saved = tune_and_save_threshold(query_embeddings, gallery_embeddings, spec, metric, output,
                                            index=index, progress=progress)
    outcome = saved.outcome
    table = Table(title=f"Rejection threshold ({objective}, {outcome.metric})")
    for column in ("rule", "threshold", objective):
        table.add_column(column, justify="right")
    table.add_row("no rejection", "-", f"{outcome.baseline:.4f}")
    table.add_row("tuned", f"{outcome.threshold:.4f}", f"{outcome.value:.4f}")
    table.add_row(f"{percentile:g}th percentile", f"{outcome.percentile_threshold:.4f}", f"{outcome.percentile_value:.4f}")
    corner, corner_value = getattr(outcome, "roc_corner_threshold", None), getattr(outcome, "roc_corner_value", None)
    if corner is not None and corner_value is not None:
        table.add_row("ROC corner", f"{corner:.4f}", f"{corner_value:.4f}")
    console.print(table)
    if outcome.held_out_classes:
        console.print(f"{len(outcome.held_out_classes)} classes held out of the gallery as distractors")
    console.print(f"written to [bold]{saved.path}[/] (curve: {saved.plot})")
    if saved.index is not None:
        console.print(f"threshold stored in the index at [bold]{saved.index}[/]")
