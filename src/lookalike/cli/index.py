"""``lookalike index``: an embedding folder → a saved, searchable index."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lookalike.cli.common import console, friendly_errors, parse_key_values
from lookalike.pipeline.indexing import build_index


@friendly_errors
def index(
    embeddings: Annotated[Path, typer.Argument(help="Gallery embedding folder written by `lookalike embed`.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Index folder to write.")],
    kind: Annotated[str, typer.Option(help="flat, ivf_flat, ivf_pq, hnsw or exact_torch.")] = "flat",
    metric: Annotated[str, typer.Option(help="cosine, ip, l2 or l1.")] = "cosine",
    device: Annotated[str, typer.Option(help="cpu, or cuda[:N] where FAISS has GPU support.")] = "cpu",
    param: Annotated[list[str] | None, typer.Option("--param", "-p", help="Index parameter key=value (nlist=1024, m=16, M=32, nprobe=16, ef_search=64); repeatable.")] = None,
    threshold: Annotated[float | None, typer.Option(help="Rejection threshold stored with the index.")] = None,
) -> None:
    """Build a FAISS (or exact torch) index over gallery EMBEDDINGS and save it with its ids."""
    built, folder = build_index(
        embeddings, output, kind, metric, device, threshold=threshold,
        **parse_key_values(param or []),
    )
    console.print(
        f"{kind} index of {built.ntotal} vectors (dimension {built.dim}, {metric}) "
        f"written to [bold]{folder}[/]"
    )
