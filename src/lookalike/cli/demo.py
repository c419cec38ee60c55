"""``lookalike demo``: the whole pipeline, offline, on Fashion-MNIST."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lookalike.cli.common import console, friendly_errors, metrics_table
from lookalike.data.fashion_mnist import DEFAULT_SOURCE_DIR
from lookalike.pipeline.demo import run_demo


@friendly_errors
def demo(
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for everything the demo writes.")] = Path("demo_output"),
    images_per_class: Annotated[int, typer.Option(help="Fashion-MNIST test images per class (10 classes).")] = 300,
    model: Annotated[str, typer.Option(help="Backbone of the embedder.")] = "efficientnet_lite:lite0",
    source_dir: Annotated[Path, typer.Option(help="Folder of Fashion-MNIST's IDX .gz files.")] = Path(DEFAULT_SOURCE_DIR),
    download: Annotated[bool, typer.Option(help="Download Fashion-MNIST when source-dir is absent (needs internet).")] = False,
    workers: Annotated[int, typer.Option(help="DataLoader worker processes.")] = 2,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N.")] = "auto",
) -> None:
    """Embed, index, search and evaluate Fashion-MNIST with EfficientNet-Lite0, offline."""
    outcome = run_demo(
        output,
        images_per_class=images_per_class,
        backbone=model,
        source_dir=source_dir,
        download=download,
        num_workers=workers,
        device=device,
    )
    run = outcome.evaluation
    console.print(metrics_table(run.metrics, title=f"Fashion-MNIST retrieval, {model}"))
    console.print(f"images:    [bold]{outcome.images}[/]")
    console.print(f"results:   [bold]{run.results_path}[/]")
    console.print(f"metrics:   [bold]{run.output / 'metrics.json'}[/]")
    console.print(f"report:    [bold]{run.output / 'report.html'}[/]")
    console.print(f"index:     [bold]{outcome.index}[/]  (try: lookalike search {outcome.index} "
                  f"{run.output / 'embeddings' / 'query'} -k 5)")
