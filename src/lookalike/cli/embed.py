"""``lookalike embed``: images → an embedding folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lookalike.cli.common import console, friendly_errors
from lookalike.data.sources import load_source
from lookalike.embed.extract import embed_image_set
from lookalike.pipeline.specs import ModelSpec, build_embedder


@friendly_errors
def embed(
    source: Annotated[str, typer.Argument(help="Images: a folder per class, a CSV/Parquet manifest, 'sop:ROOT'.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder the embeddings are written to.")],
    split: Annotated[str | None, typer.Option(help="Embed only records of this split (query, gallery ...).")] = None,
    model: Annotated[str, typer.Option(help="Backbone name, e.g. efficientnet_lite:lite0, timm:resnet50.")] = "efficientnet_lite:lite0",
    pool: Annotated[str, typer.Option(help="Pooling: auto, gap, gem, max, cls.")] = "auto",
    head: Annotated[str, typer.Option(help="Head: none, linear:D, mlp:D.")] = "none",
    weights: Annotated[str, typer.Option(help="pretrained, none, or a local weights file.")] = "pretrained",
    checkpoint: Annotated[str | None, typer.Option(help="A saved model folder (overrides --model).")] = None,
    batch_size: Annotated[int, typer.Option(help="Images per forward pass.")] = 64,
    workers: Annotated[int, typer.Option(help="DataLoader worker processes.")] = 2,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N.")] = "auto",
    tta: Annotated[list[str] | None, typer.Option(help="Test-time augmentation: flip, scale:0.8 (repeatable).")] = None,
    shard_size: Annotated[int, typer.Option(help="Images per resumable shard.")] = 10_000,
) -> None:
    """Embed every image of SOURCE; an interrupted run resumes from its finished shards."""
    images = load_source(source)
    if split:
        images = images.split(split)
        if not len(images):
            raise ValueError(f"{source} has no records with split {split!r}")
    embedder = build_embedder(ModelSpec(model, pool, head, weights, checkpoint))
    result = embed_image_set(
        embedder,
        images,
        output_dir=output,
        batch_size=batch_size,
        num_workers=workers,
        device=device,
        tta=tuple(tta or ()),
        shard_size=shard_size,
    )
    skipped = result.info.get("skipped", [])
    console.print(f"{len(result)} embeddings of dimension {result.dim} written to [bold]{output}[/]")
    if skipped:
        console.print(f"[yellow]{len(skipped)} unreadable images skipped[/], listed in {output / 'skipped.csv'}")
