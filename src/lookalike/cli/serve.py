"""``lookalike serve``: an index folder (and its model) behind an HTTP API and a web page."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lookalike.cli.common import console, friendly_errors
from lookalike.models.spec import ModelSpec


@friendly_errors
def serve(
    index_folder: Annotated[Path, typer.Argument(help="Index folder written by `lookalike index`.")],
    model: Annotated[str | None, typer.Option(help="Backbone that embedded the index (e.g. efficientnet_lite:lite0); omit for search by id and vector only.")] = None,
    checkpoint: Annotated[str | None, typer.Option(help="Saved model that embedded the index (instead of --model).")] = None,
    pool: Annotated[str, typer.Option(help="Pooling of --model.")] = "auto",
    head: Annotated[str, typer.Option(help="Head of --model.")] = "none",
    weights: Annotated[str, typer.Option(help="Weights of --model: pretrained, none, or a local file.")] = "pretrained",
    runtime: Annotated[str, typer.Option(help="auto, torch, or onnxruntime: run an ONNX export folder (`lookalike export`) given as --checkpoint [default: auto: ONNX Runtime for an export folder].")] = "auto",
    host: Annotated[str, typer.Option(help="Interface to bind (0.0.0.0 exposes the server to the network).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    device: Annotated[str, typer.Option(help="Where the model runs: auto, cpu, cuda[:N].")] = "auto",
    batch_max: Annotated[int, typer.Option(help="Most queries embedded per forward pass (1: no micro-batching).")] = 16,
    batch_wait_ms: Annotated[float, typer.Option(help="How long a query waits for others to share its batch.")] = 5.0,
    max_k: Annotated[int, typer.Option(help="Largest k a search may ask for.")] = 100,
    max_upload_mb: Annotated[float, typer.Option(help="Largest image upload, in MiB.")] = 10.0,
    max_pixels: Annotated[int, typer.Option(help="Largest image, in pixels (bigger ones are refused before decoding).")] = 40_000_000,
    state_dir: Annotated[Path | None, typer.Option(help="Folder of the journal and added images (default: INDEX_FOLDER.state).")] = None,
    compact_every: Annotated[int, typer.Option(help="Rewrite the index folder after this many journal records (0: only on request).")] = 1000,
    cors_origin: Annotated[list[str] | None, typer.Option(help="Origin allowed to call the API from a browser; repeatable (none by default).")] = None,
    token_env: Annotated[str, typer.Option(help="Environment variable holding the bearer token of the write endpoints.")] = "LOOKALIKE_SERVE_TOKEN",
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
) -> None:
    """Serve INDEX_FOLDER: search by image, text (CLIP), item or vector; add and delete items."""
    from lookalike.serve import ServeSettings, run_server

    if model and checkpoint:
        raise ValueError("give --model or --checkpoint, not both")
    spec = None
    if model or checkpoint:
        spec = ModelSpec(model or "efficientnet_lite:lite0", pool, head, weights, checkpoint, runtime=runtime)
    settings = ServeSettings(
        max_k=max_k,
        default_k=min(10, max_k),
        max_upload_bytes=int(max_upload_mb * 1024 * 1024),
        max_pixels=max_pixels,
        batch_max=batch_max,
        batch_wait_ms=batch_wait_ms,
        device=device,
        token_env=token_env,
        cors_origins=list(cors_origin or []),
        state_dir=None if state_dir is None else str(state_dir),
        compact_every=compact_every,
    )

    def announce(url: str) -> None:
        console.print(f"serving [bold]{index_folder}[/] on {url} (API docs at {url}docs)")

    run_server(
        index_folder, spec, settings, host=host, port=port, log_level=log_level, on_start=announce
    )
