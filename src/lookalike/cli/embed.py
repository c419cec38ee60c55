"""``lookalike embed``: images → an embedding folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lookalike.cli.common import console, friendly_errors, progress_bars
from lookalike.embed.shards import SKIPPED_FILE
from lookalike.embed.spec import EmbedSpec
from lookalike.models.spec import model_spec_from_options
from lookalike.pipeline.embedding import embed_images


@friendly_errors
def embed(
    source: Annotated[str, typer.Argument(help="Images: a folder per class, a CSV/Parquet manifest, 'sop:ROOT'.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder the embeddings are written to.")],
    split: Annotated[str | None, typer.Option(help="Embed only records of this split (query, gallery ...).")] = None,
    model: Annotated[str | None, typer.Option(help="Backbone name, e.g. timm:resnet50 [default: efficientnet_lite:lite0].")] = None,
    pool: Annotated[str | None, typer.Option(help="Pooling: auto, gap, gem, max, cls [default: auto].")] = None,
    head: Annotated[str | None, typer.Option(help="Head: none, linear:D, mlp:D [default: none].")] = None,
    weights: Annotated[str | None, typer.Option(help="pretrained, none, or a local weights file [default: pretrained].")] = None,
    checkpoint: Annotated[str | None, typer.Option(help="A saved model folder (instead of --model/--pool/--head/--weights).")] = None,
    runtime: Annotated[str, typer.Option(help="auto, torch, or onnxruntime: run an ONNX export folder (`lookalike export`) given as --checkpoint [default: auto: ONNX Runtime for an export folder].")] = "auto",
    batch_size: Annotated[int, typer.Option(help="Images per forward pass.")] = 64,
    workers: Annotated[str, typer.Option(help="DataLoader worker processes, or auto (share the cores with the model's threads).")] = "auto",
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N.")] = "auto",
    tta: Annotated[list[str] | None, typer.Option(help="Test-time augmentation: flip, scale:0.8 (repeatable).")] = None,
    shard_size: Annotated[int, typer.Option(help="Images per resumable shard.")] = 10_000,
    decode_on_device: Annotated[bool, typer.Option("--decode-on-device", help="Workers only read JPEG files; batches are decoded on the device (nvJPEG on CUDA). For when decoding, not the model, is the wall; not faster on the CPU.")] = False,
    engine: Annotated[str, typer.Option(help="local, or ray: a pool of model actors on Ray Data (needs the ray extra of lookalike).")] = "local",
    address: Annotated[str | None, typer.Option(help="With --engine ray: the cluster, HOST:PORT or auto (default: $RAY_ADDRESS when set, else Ray on this machine).")] = None,
    actors: Annotated[int, typer.Option(help="With --engine ray: model actors (a GPU each where the cluster has them).")] = 2,
) -> None:
    """Embed every image of SOURCE; an interrupted run resumes from its finished shards."""
    with progress_bars() as progress:
        result = embed_images(
            source,
            output,
            split=split,
            model=model_spec_from_options(checkpoint, model, pool, head, weights, runtime=runtime),
            embed=EmbedSpec(batch_size=batch_size, num_workers=workers, device=device,
                            tta=list(tta or ()), shard_size=shard_size,
                            decode_on_device=decode_on_device, engine=engine,
                            address=address, actors=actors),
            progress=progress,
        )
    skipped = result.info.get("skipped", [])
    console.print(f"{len(result)} embeddings of dimension {result.dim} written to [bold]{output}[/]")
    if skipped:
        console.print(f"[yellow]{len(skipped)} unreadable images skipped[/], listed in {output / SKIPPED_FILE}")
