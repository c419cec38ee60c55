"""``lookalike search``: queries (embeddings, images or texts) against a saved index → ranked results."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lookalike.cli.common import console, friendly_errors, progress_bars
from lookalike.embed.spec import EmbedSpec
from lookalike.models.spec import model_spec_from_options
from lookalike.pipeline.indexing import search_index
from lookalike.pipeline.text import search_text


@friendly_errors
def search(
    index_folder: Annotated[Path, typer.Argument(help="Index folder written by `lookalike index`.")],
    queries: Annotated[str | None, typer.Argument(help="Query embedding folder, or query images (folder, manifest) to embed; omit with --text/--queries-text.")] = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="Results file: .csv or .json.")] = Path("results.csv"),
    k: Annotated[int, typer.Option("-k", "--k", help="Results per query.")] = 10,
    text: Annotated[list[str] | None, typer.Option("--text", help="Text query (CLIP models): 'a red car'; repeatable.")] = None,
    queries_text: Annotated[Path | None, typer.Option("--queries-text", help="Text queries: one per line, or a CSV with columns id,text.")] = None,
    threshold: Annotated[float | None, typer.Option(help="Rejection threshold (overrides the one stored with the index).")] = None,
    no_threshold: Annotated[bool, typer.Option("--no-threshold", help="Ignore the index's stored threshold.")] = False,
    exclude_self: Annotated[bool, typer.Option(help="Drop each query's own id from its results.")] = False,
    model: Annotated[str | None, typer.Option(help="Backbone used to embed query images or texts [default: efficientnet_lite:lite0].")] = None,
    pool: Annotated[str | None, typer.Option(help="Pooling used to embed query images [default: auto].")] = None,
    head: Annotated[str | None, typer.Option(help="Head used to embed query images [default: none].")] = None,
    weights: Annotated[str | None, typer.Option(help="pretrained, none, or a local weights file [default: pretrained].")] = None,
    checkpoint: Annotated[str | None, typer.Option(help="Saved model that embeds query images or texts (instead of --model/--pool/--head/--weights).")] = None,
    no_normalize: Annotated[bool, typer.Option("--no-normalize", help="Embed queries without L2 normalisation (a model with normalize=false).")] = False,
    runtime: Annotated[str, typer.Option(help="auto, torch, or onnxruntime: run an ONNX export folder (`lookalike export`) given as --checkpoint [default: auto: ONNX Runtime for an export folder].")] = "auto",
    batch_size: Annotated[int, typer.Option(help="Images per forward pass.")] = 64,
    workers: Annotated[int, typer.Option(help="DataLoader worker processes decoding query images.")] = 2,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N: where queries are embedded and the index is searched (a FAISS GPU index needs faiss-gpu; auto uses it when present).")] = "auto",
    query_embeddings_dir: Annotated[Path | None, typer.Option(help="Keep the query images' embeddings in this folder (default: not kept).")] = None,
) -> None:
    """Top-k gallery results for each query; with a threshold, "no_match" takes its place."""
    spec = model_spec_from_options(checkpoint, model, pool, head, weights, normalize=not no_normalize, runtime=runtime)
    given = [name for name, value in (("QUERIES", queries), ("--text", text), ("--queries-text", queries_text)) if value]
    if len(given) != 1:
        raise ValueError(
            "give one kind of query: QUERIES (embeddings or images), --text or --queries-text"
            + (f"; got {' and '.join(given)}" if given else "")
        )
    with progress_bars() as progress:
        if queries is None:
            outcome = search_text(
                index_folder, text or None, output, texts_file=queries_text, model=spec, k=k,
                device=device, threshold=threshold, use_threshold=not no_threshold,
                progress=progress,
            )
        else:
            outcome = search_index(
                index_folder,
                queries,
                output,
                k=k,
                device=device,
                threshold=threshold,
                use_threshold=not no_threshold,
                exclude_self=exclude_self,
                model=spec,
                embed=EmbedSpec(batch_size=batch_size, num_workers=workers, device=device),
                query_embeddings_dir=query_embeddings_dir,
                progress=progress,
            )
    console.print(f"top-{k} results of {len(outcome.result)} queries written to [bold]{outcome.path}[/]")
