"""``lookalike embed-text``: a texts file → an embedding folder in a CLIP model's image space."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lookalike.cli.common import console, friendly_errors, progress_bars
from lookalike.models.spec import model_spec_from_options
from lookalike.pipeline.text import embed_text_file


@friendly_errors
def embed_text(
    texts_file: Annotated[Path, typer.Argument(help="One text per line (ids: line numbers), or a CSV with columns id,text.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Embedding folder to write.")],
    model: Annotated[str | None, typer.Option(help="An open_clip backbone, e.g. open_clip:ViT-B-32/openai.")] = None,
    weights: Annotated[str | None, typer.Option(help="pretrained, none, or a local weights file [default: pretrained].")] = None,
    checkpoint: Annotated[str | None, typer.Option(help="A saved open_clip model folder (instead of --model/--weights).")] = None,
    no_normalize: Annotated[bool, typer.Option("--no-normalize", help="Keep raw norms (as a model with normalize=false embeds images).")] = False,
    batch_size: Annotated[int, typer.Option(help="Texts per forward pass.")] = 256,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N.")] = "auto",
) -> None:
    """Embed TEXTS_FILE with a CLIP text tower; the folder searches an index of the model's images."""
    with progress_bars() as progress:
        result = embed_text_file(
            texts_file,
            output,
            model=model_spec_from_options(checkpoint, model, weights=weights, normalize=not no_normalize),
            batch_size=batch_size,
            device=device,
            progress=progress,
        )
    console.print(f"{len(result)} text embeddings of dimension {result.dim} written to [bold]{output}[/]")
