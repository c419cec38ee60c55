"""``lookalike search``: queries (embeddings or images) against a saved index → ranked results."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lookalike.cli.common import console, friendly_errors, progress_bars
from lookalike.embed.spec import EmbedSpec
from lookalike.models.spec import model_spec_from_options
from lookalike.pipeline.indexing import search_index


@friendly_errors
def search(
    index_folder: Annotated[Path, typer.Argument(help="Index folder written by `lookalike index`.")],
    queries: Annotated[str, typer.Argument(help="Query embedding folder, or query images (folder, manifest) to embed.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Results file: .csv or .json.")] = Path("results.csv"),
    k: Annotated[int, typer.Option("-k", "--k", help="Results per query.")] = 10,
    threshold: Annotated[float | None, typer.Option(help="Rejection threshold (overrides the one stored with the index).")] = None,
    no_threshold: Annotated[bool, typer.Option("--no-threshold", help="Ignore the index's stored threshold.")] = False,
    exclude_self: Annotated[bool, typer.Option(help="Drop each query's own id from its results.")] = False,
    model: Annotated[str | None, typer.Option(help="Backbone used to embed query images [default: efficientnet_lite:lite0].")] = None,
    pool: Annotated[str | None, typer.Option(help="Pooling used to embed query images [default: auto].")] = None,
    head: Annotated[str | None, typer.Option(help="Head used to embed query images [default: none].")] = None,
    weights: Annotated[str | None, typer.Option(help="pretrained, none, or a local weights file [default: pretrained].")] = None,
    checkpoint: Annotated[str | None, typer.Option(help="Saved model that embeds query images (instead of --model/--pool/--head/--weights).")] = None,
    batch_size: Annotated[int, typer.Option(help="Images per forward pass.")] = 64,
    workers: Annotated[int, typer.Option(help="DataLoader worker processes decoding query images.")] = 2,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N (embedding query images).")] = "auto",
    query_embeddings_dir: Annotated[Path | None, typer.Option(help="Keep the query images' embeddings in this folder (default: not kept).")] = None,
) -> None:
    """Top-k gallery results for each query; with a threshold, "no_match" takes its place."""
    with progress_bars() as progress:
        outcome = search_index(
            index_folder,
            queries,
            output,
            k=k,
            threshold=threshold,
            use_threshold=not no_threshold,
            exclude_self=exclude_self,
            model=model_spec_from_options(checkpoint, model, pool, head, weights),
            embed=EmbedSpec(batch_size=batch_size, num_workers=workers, device=device),
            query_embeddings_dir=query_embeddings_dir,
            progress=progress,
        )
    console.print(f"top-{k} results of {len(outcome.result)} queries written to [bold]{outcome.path}[/]")
