"""``lookalike evaluate``: a model (or embeddings) on a query/gallery split → metrics.json."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lookalike.cli.common import (
    console,
    dotted_settings,
    friendly_errors,
    metrics_table,
    progress_bars,
    variants_table,
)
from lookalike.cli.index import metric_choice_table
from lookalike.config import resolve_config
from lookalike.models.spec import model_spec_from_options
from lookalike.pipeline.evaluate import EvaluateConfig, run_evaluation


@friendly_errors
def evaluate(
    overrides: Annotated[list[str] | None, typer.Argument(help="Dotted overrides: model.backbone=timm:resnet50 index.kind=hnsw k=20.")] = None,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="YAML config (see configs/).")] = None,
    source: Annotated[str | None, typer.Option(help="Images: a folder per class, a CSV/Parquet manifest, 'sop:ROOT'.")] = None,
    protocol: Annotated[str | None, typer.Option(help="given, all_vs_all, per_class or class_disjoint.")] = None,
    embeddings: Annotated[str | None, typer.Option(help="One precomputed embedding folder, split by --protocol.")] = None,
    query_embeddings: Annotated[str | None, typer.Option(help="Precomputed query embedding folder.")] = None,
    gallery_embeddings: Annotated[str | None, typer.Option(help="Precomputed gallery embedding folder.")] = None,
    model: Annotated[str | None, typer.Option(help="Backbone, e.g. efficientnet_lite:lite0.")] = None,
    checkpoint: Annotated[str | None, typer.Option(help="Saved model folder or training checkpoint.")] = None,
    runtime: Annotated[str | None, typer.Option(help="auto, torch, or onnxruntime: run an ONNX export folder (`lookalike export`) given as --checkpoint [default: auto: ONNX Runtime for an export folder].")] = None,
    threshold: Annotated[float | None, typer.Option(help="Rejection threshold: 'no match' in results, open-set metrics.")] = None,
    metric: Annotated[str | None, typer.Option(help="cosine, ip, l2, l1, or auto: the best of the four on the protocol's val split (metric_choice.json) [default: cosine].")] = None,
    no_normalize: Annotated[bool, typer.Option("--no-normalize", help="Embed without L2 normalisation (model.normalize=false): ip and l2 then differ from cosine.")] = False,
    device: Annotated[str | None, typer.Option(help="Where ranking and the index run: cpu, cuda[:N], auto [default: cpu].")] = None,
    output: Annotated[str | None, typer.Option("--output", "-o", help="Run folder.")] = None,
) -> None:
    """Score retrieval: Recall@K, Precision@K, mAP, MAP@K, MAP@R and the weighted top-k score.

    Post-processing is switched on with overrides and reported beside the baseline, e.g.
    postprocess.whitening=true postprocess.qe=true postprocess.k_reciprocal=true.
    """
    options = {
        "source": source,
        "protocol": protocol,
        "embeddings": embeddings,
        "query_embeddings": query_embeddings,
        "gallery_embeddings": gallery_embeddings,
        "model.backbone": model,
        "model.checkpoint": checkpoint,
        "model.runtime": runtime,
        "rejection.threshold": threshold,
        "index.metric": metric,
        "model.normalize": False if no_normalize else None,
        "index.device": device,
        "output": output,
    }
    model_spec_from_options(checkpoint, model)  # a checkpoint carries its own model
    resolved = resolve_config(EvaluateConfig, config, dotted_settings(options, overrides or []))
    with progress_bars() as progress:
        outcome = run_evaluation(resolved, progress=progress)
    if outcome.metric_choice is not None:
        console.print(metric_choice_table(outcome.metric_choice))
    if outcome.metrics:
        console.print(metrics_table(outcome.metrics))
    if outcome.variants:
        console.print(variants_table(outcome.variants))
    console.print(f"results: [bold]{outcome.results_path}[/]")
    console.print(f"run folder: [bold]{Path(outcome.output)}[/]")
    if outcome.report_path is not None:
        console.print(f"report: [bold]{outcome.report_path}[/]")
    if outcome.skipped:
        console.print(f"[yellow]{len(outcome.skipped)} unreadable images skipped[/] (skipped.csv)")
