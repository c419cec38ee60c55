"""``lookalike index``: an embedding folder → a saved, searchable index."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from lookalike.cli.common import console, friendly_errors, parse_key_values
from lookalike.metrics.metric_choice import MetricChoice
from lookalike.pipeline.indexing import build_index
from lookalike.pipeline.metric_choice import stored_metric_choice


@friendly_errors
def index(
    embeddings: Annotated[Path, typer.Argument(help="Gallery embedding folder written by `lookalike embed`.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Index folder to write.")],
    kind: Annotated[str, typer.Option(help="flat, ivf_flat, ivf_pq, hnsw, exact_torch or milvus (pip install 'lookalike[milvus]').")] = "flat",
    metric: Annotated[str, typer.Option(help="cosine, ip, l2, l1, or auto: the best of the four on validation embeddings (--val-embeddings).")] = "cosine",
    val_embeddings: Annotated[Path | None, typer.Option(help="Labelled validation embeddings for --metric auto: the queries, or (alone) a set ranked all-vs-all.")] = None,
    val_gallery_embeddings: Annotated[Path | None, typer.Option(help="Validation gallery embeddings for --metric auto (with --val-embeddings as queries).")] = None,
    monitor: Annotated[str, typer.Option(help="What --metric auto maximises: map@r, map, recall@1, map@5, weighted_topk ...")] = "map@r",
    device: Annotated[str, typer.Option(help="cpu, cuda[:N] (a FAISS GPU index needs faiss-gpu), or auto (a GPU when the index can use one).")] = "cpu",
    param: Annotated[list[str] | None, typer.Option("--param", "-p", help="Index parameter key=value (nlist=1024, m=16, M=32, nprobe=16, ef_search=64); repeatable.")] = None,
    threshold: Annotated[float | None, typer.Option(help="Rejection threshold stored with the index.")] = None,
) -> None:
    """Build a FAISS, exact torch or Milvus index over gallery EMBEDDINGS and save it with its ids."""
    built, folder = build_index(
        embeddings, output, kind, metric, device, threshold=threshold,
        validation=val_embeddings, validation_gallery=val_gallery_embeddings, monitor=monitor,
        **parse_key_values(param or []),
    )
    choice = stored_metric_choice(folder)
    if choice is not None:
        console.print(metric_choice_table(choice))
    console.print(
        f"{kind} index of {built.ntotal} vectors (dimension {built.dim}, {built.metric.name}) "
        f"written to [bold]{folder}[/]"
    )


def metric_choice_table(choice: MetricChoice) -> Table:
    """The candidates' validation scores side by side, the chosen metric marked."""
    columns = [key for key in ("recall@1", "recall@5", "map@r", "map", "map@5") if key in
               next(iter(choice.scores.values()), {})]
    header, rows = choice.table(dict.fromkeys([choice.monitor, *columns]))
    table = Table(title=f"metric auto: {choice.metric} (best {choice.monitor} on {choice.split}, "
                        f"{choice.n_queries} queries)")
    for name in header:
        table.add_column(name)
    for row in rows:
        table.add_row(*row)
    return table
